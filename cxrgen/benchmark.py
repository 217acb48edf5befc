"""`cxrgen benchmark`: does a method learn, every time, and does each of its modules matter?

On one phantom benchmark (built once), the method's recipe (a profile of its demo preset: ``demo`` is the
``cxrgen demo`` recipe, ``full`` a longer one from the preset's ``benchmark.profiles``) is trained with N seeds, and
with each ablation of the preset's ``benchmark.ablations`` (model overrides, e.g. CMCRL without VDM) on the same
seeds. Every run is scored on the test split next to reference systems that tell how far the model is from what the
data allows:

* the demo's two baselines: the most frequent training report, and nearest-neighbour retrieval by pixels;
* the **label oracle**: the training report whose positive observations match the study's true ones best
  (:func:`cxrgen.evaluation.baselines.label_retrieval_reports`): perfect perception, retrieval-quality writing;
* **classifier + retrieval**, per seed: the method's own perception (``benchmark.perception_stage``: CMCRL's
  backbone classifier, TRRG's stage-1 zero-shot head; :mod:`cxrgen.evaluation.perception`) thresholded per
  observation at the F1-optimal point on the val split, its labels -> the training report with the nearest labels.

Also per seed: the per-observation AUROC of that perception on the test split, and, for methods whose reports are
conditioned on clues (``benchmark.swap_clues``, TRRG), the reports written with another test study's clues swapped
in: how often the CE labels of the report follow the swapped clues where they differ from the study's own; and the
reports written with each study's true labels as its clues (what the generator writes from perfect perception).

Runs already complete in the output folder (``run.json`` with the same settings) are reused, so an interrupted
benchmark continues where it stopped. Results: ``results.json``, ``results.md`` (mean and standard deviation over
seeds, per-observation F1 and AUROC tables) and ``per_observation_f1.png``. Phantom data: a check that the methods
learn to read the images the generator draws, not clinical performance.
"""

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoProcessor

from cxrgen.data.annotation import read_annotation
from cxrgen.data.iu_xray import find_nlm_reports_archive
from cxrgen.data.phantom_benchmark import IMAGES_DIR, build_phantom_benchmark
from cxrgen.demo import BASELINE_NAMES, baseline_reports, recipe_settings, train_recipe
from cxrgen.environment import run_environment
from cxrgen.evaluation.baselines import label_retrieval_reports
from cxrgen.evaluation.metrics import NLG_METRICS, MeteorScorer, evaluate_reports
from cxrgen.evaluation.perception import f1_thresholds, per_observation_auroc, positive_matrix, study_probabilities
from cxrgen.evaluation.predictions import write_predictions
from cxrgen.evaluation.report import evaluate_model, reference_reports
from cxrgen.inference import generate_reports, load_generator
from cxrgen.labeler import label_report
from cxrgen.labels import CHEXPERT_OBSERVATIONS
from cxrgen.methods import DEFAULT_METHOD, METHODS, get_method
from cxrgen.presets import load_preset

PROFILES = ("demo", "full")
RECIPE = "recipe"
ORACLE = "label oracle (retrieval)"
CLASSIFIER_RETRIEVAL = "classifier + retrieval"
TRUE_LABEL_CLUES = "{} (recipe), true labels as clues"
REFERENCE_NAMES = (*BASELINE_NAMES, ORACLE)
# (name, path in an evaluate_reports result) of the summary metrics.
SUMMARY_METRICS = tuple((name, ("nlg", name)) for name in NLG_METRICS) + tuple(
    (f"CE {average} F1", ("ce", average, "f1")) for average in ("micro", "macro", "example")
)
RUN_RECORD = "run.json"
REFERENCES_RECORD = "references.json"
FIGURE_NAME = "per_observation_f1.png"


def run_benchmark(
    output_dir: str | os.PathLike,
    method: str = DEFAULT_METHOD,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    profile: str = "demo",
    ablations: Sequence[str] | None = None,
    ablation_seeds: Sequence[int] | None = None,
    source: str = "auto",
    image_size: int | None = None,
    max_studies: int | None = None,
    max_steps: int | None = None,
    batch_size: int | None = None,
    model_overrides: dict | None = None,
    synthetic_studies: int = 1000,
    echo: Callable[[str], object] = print,
) -> dict:
    """Run (or continue) the quality benchmark of ``method`` in ``output_dir`` and return its summary.

    ``ablations``: names of the preset's ``benchmark.ablations`` (None: all of them; ``()``: none), trained with
    ``ablation_seeds`` (default: ``seeds``; a subset of them, so that each ablation is compared on its seeds). ``image_size``,
    ``max_studies``, ``max_steps``, ``batch_size`` and ``model_overrides`` shrink a run as in
    :func:`cxrgen.demo.run_demo` (for smoke tests); the data are built with seed 0 whatever the training seeds.
    """
    if method not in METHODS:
        raise ValueError(f"The benchmark trains one of {sorted(METHODS)}, not {method!r}.")
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds) or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise ValueError(f"seeds must be distinct integers >= 0, got {seeds!r}.")
    ablation_seeds = seeds if ablation_seeds is None else list(ablation_seeds)
    if not ablation_seeds or not set(ablation_seeds) <= set(seeds):
        raise ValueError(f"ablation seeds must be some of the seeds {seeds}, got {ablation_seeds!r}.")
    spec = get_method(method)
    preset = load_preset(method, spec.demo_preset)
    benchmark = preset.get("benchmark")
    if benchmark is None or "demo" not in preset:
        raise ValueError(f"The {spec.demo_preset!r} preset of {method} has no demo and benchmark sections.")
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}.")
    recipe = preset["demo"] if profile == "demo" else benchmark["profiles"][profile]
    known = benchmark.get("ablations", {})
    ablations = list(known) if ablations is None else list(ablations)
    unknown = [name for name in ablations if name not in known]
    if unknown:
        raise ValueError(f"Unknown ablation(s) {unknown} for {method}; the preset has {sorted(known)}.")
    if source == "auto":
        source = "iu" if find_nlm_reports_archive() is not None else "synthetic"
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    data_settings = {"source": source, "image_size": image_size or recipe["image_size"], "max_studies": max_studies}
    data_settings["synthetic_studies"] = synthetic_studies
    annotation_path = _data(output_dir / "data", data_settings, echo)
    image_root = output_dir / "data" / IMAGES_DIR
    annotation = read_annotation(annotation_path)

    variants = {RECIPE: {}, **{name: known[name] for name in ablations}}
    runs = {}
    # One METEOR process for every scoring of the benchmark: each JVM start costs seconds.
    with MeteorScorer() as meteor:
        for variant, overrides in variants.items():
            settings, _ = recipe_settings(recipe, image_size, max_steps, None, batch_size, model_overrides)
            # An ablation changes the report generator (the last stage) only; the stages before it are the recipe's.
            settings["stages"][-1]["model"] = {**settings["stages"][-1].get("model", {}), **overrides}
            for seed in seeds if variant == RECIPE else ablation_seeds:
                run_dir = output_dir / "runs" / variant / f"seed-{seed}"
                plan = {"method": method, "profile": profile, "variant": variant, "seed": seed, "settings": settings}
                plan["data"] = data_settings
                shared = None if variant == RECIPE else output_dir / "runs" / RECIPE / f"seed-{seed}"
                runs.setdefault(variant, []).append(
                    _run(spec, benchmark, plan, annotation, annotation_path, image_root, run_dir, shared, meteor, echo)
                )
        references = _references(annotation, image_root, runs[RECIPE][0]["model_dir"], output_dir, meteor, echo)
    summary = _summary(spec, profile, seeds, ablation_seeds, data_settings, annotation, runs, references)
    (output_dir / "results.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    (output_dir / "results.md").write_text(results_markdown(summary), encoding="utf-8")
    per_observation_figure(summary, output_dir / FIGURE_NAME)
    echo("")
    echo(results_markdown(summary))
    echo(f"Results: {output_dir / 'results.md'}, {output_dir / 'results.json'}, {output_dir / FIGURE_NAME}")
    return summary


def _data(data_dir: Path, settings: dict, echo: Callable[[str], object]) -> Path:
    """The benchmark's phantom data, built once (the settings are recorded beside and checked on reuse)."""
    record = data_dir / "settings.json"
    annotation_path = data_dir / "annotation.json"
    if record.is_file() and annotation_path.is_file():
        saved = json.loads(record.read_text(encoding="utf-8"))
        if saved != settings:
            raise ValueError(
                f"{data_dir} holds phantom data built with {saved}, not {settings}: choose a new --output folder."
            )
        echo(f"Reusing the phantom benchmark in {data_dir}")
        return annotation_path
    if data_dir.exists() and any(data_dir.iterdir()):
        raise ValueError(f"{data_dir} is not empty and holds no complete phantom benchmark: choose a new --output.")
    echo(f"Building the phantom benchmark ({settings['source']} reports, {settings['image_size']} px) ...")
    build_phantom_benchmark(
        data_dir,
        source=settings["source"],
        image_size=settings["image_size"],
        max_studies=settings["max_studies"],
        seed=0,
        synthetic_studies=settings["synthetic_studies"],
    )
    record.write_text(json.dumps(settings), encoding="utf-8")
    return annotation_path


def _run(spec, benchmark, plan, annotation, annotation_path, image_root, run_dir, shared, meteor, echo) -> dict:
    """Train and score one (variant, seed), or read it back when ``run_dir`` holds it complete. An ablation
    (``shared``: the recipe's run of the same seed) links the recipe's earlier stage folders and trains the last
    stage only."""
    record_path = run_dir / RUN_RECORD
    label = f"{plan['variant']} seed {plan['seed']}"
    if record_path.is_file():
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if record["plan"] != json.loads(json.dumps(plan)):
            raise ValueError(
                f"{run_dir} holds a run of other settings than this benchmark's: choose a new --output folder."
            )
        echo(f"Reusing {label} ({run_dir})")
        return record
    if run_dir.exists():
        raise ValueError(f"{run_dir} holds an unfinished run: delete it to train it again.")
    echo(f"Training {spec.display_name} {label} ...")
    started = time.perf_counter()
    settings = plan["settings"]
    model_dir = run_dir / "model"
    stages, init = settings["stages"], None
    if shared is not None:
        run_dir.mkdir(parents=True)
        for entry in stages[:-1]:
            (run_dir / entry["folder"]).symlink_to((shared / entry["folder"]).resolve(), target_is_directory=True)
        if len(stages) > 1:
            init = run_dir / stages[-2]["folder"]
        stages = stages[-1:]
    train_recipe(
        spec, stages, annotation_path, image_root, run_dir, model_dir, plan["data"]["source"], plan["seed"], init
    )
    train_seconds = time.perf_counter() - started
    generator = load_generator(model_dir)
    evaluation = evaluate_model(
        model_dir,
        annotation,
        image_root,
        split="test",
        output_dir=run_dir / "evaluation",
        batch_size=64,
        num_beams=settings["num_beams"],
        generator=generator,
        meteor=meteor,
    )
    if [record["id"] for record in evaluation["records"]] != [entry["id"] for entry in annotation["test"]]:
        # The classifier + retrieval and true-label-clue systems pair the records with the split by position.
        raise RuntimeError(f"{run_dir}: the evaluation records are not in the order of the annotation's test split")
    references = [record["reference"] for record in evaluation["records"]]
    record = {
        "plan": plan,
        "model_dir": str(model_dir),
        "train_seconds": round(train_seconds, 1),
        "metrics": _scores(evaluation["metrics"]),
        "distinct_reports": len({r["prediction"] for r in evaluation["records"]}),
    }
    perception_folder = _stage_folder(settings["stages"], benchmark["perception_stage"], run_dir)
    record.update(_perception(perception_folder, annotation, image_root, generator, references, run_dir, meteor))
    if benchmark.get("swap_clues"):
        records = evaluation["records"]
        record["swapped_clues"] = swapped_clues(generator, records, settings["num_beams"])
        truth = positive_matrix([entry["labels"] for entry in annotation["test"]])
        written = given_clue_reports(generator, records, truth.astype(np.float32), settings["num_beams"])
        record["true_label_clues"] = _scores(evaluate_reports(written, references, meteor=meteor))
    record["seconds"] = round(time.perf_counter() - started, 1)
    record_path.write_text(json.dumps(record, indent=2), encoding="utf-8")
    echo(
        f"  {label}: macro CE-F1 {record['metrics']['ce']['macro']['f1']:.4f}, {CLASSIFIER_RETRIEVAL} "
        f"{record['classifier_retrieval']['ce']['macro']['f1']:.4f}, perception macro AUROC "
        f"{record['perception']['macro_auroc']:.3f} ({record['seconds']:.0f} s)"
    )
    return record


def _stage_folder(stages: list[dict], stage: str, run_dir: Path) -> Path:
    for entry in stages:
        if entry["stage"] == stage and "folder" in entry:
            return run_dir / entry["folder"]
    raise ValueError(f"The recipe has no stage {stage!r} with a folder (the benchmark's perception_stage).")


def _scores(result: dict) -> dict:
    """The parts of an evaluate_reports result the summary keeps (NLG scores, CE averages and per observation)."""
    return {"nlg": {name: result["nlg"][name] for name in NLG_METRICS}, "ce": result["ce"]}


def _perception(folder, annotation, image_root, generator, references, run_dir, meteor) -> dict:
    """Per-observation AUROC of the perception on the test split, and the classifier + retrieval system's scores."""
    probabilities, truth = {}, {}
    for split in ("val", "test"):
        entries = annotation[split]
        probabilities[split] = study_probabilities(folder, [_image_paths(entry, image_root) for entry in entries])
        truth[split] = positive_matrix([entry["labels"] for entry in entries])
    thresholds = f1_thresholds(probabilities["val"], truth["val"])
    predicted = probabilities["test"] >= np.asarray(thresholds)
    train_reports, train_labels = _training_reports(generator.processor, annotation)
    reports = label_retrieval_reports(train_labels, train_reports, predicted)
    test_ids = [entry["id"] for entry in annotation["test"]]
    write_predictions(
        [{"id": i, "prediction": p, "reference": r} for i, p, r in zip(test_ids, reports, references)],
        run_dir / "classifier_retrieval.jsonl",
    )
    return {
        "perception": per_observation_auroc(probabilities["test"], truth["test"]),
        "perception_thresholds": dict(zip(CHEXPERT_OBSERVATIONS, thresholds)),
        "classifier_retrieval": _scores(evaluate_reports(reports, references, meteor=meteor)),
    }


def _image_paths(entry: dict, image_root: Path) -> list[Path]:
    return [image_root / path for path in entry["image_path"]]


def _training_reports(processor, annotation: dict) -> tuple[list[str], np.ndarray]:
    """The training reports as the model writes them (cleaned like its targets) and their positive observations as
    the CE metrics read them (the labeler on those texts)."""
    reports = reference_reports(processor, [entry["report"] for entry in annotation["train"]])
    return reports, positive_matrix([label_report(report) for report in reports])


def given_clue_reports(
    generator, records: list[dict], clue_probabilities: np.ndarray, num_beams: int, batch_size: int = 64
) -> list[str]:
    """The reports of the evaluated test studies (``records``) written with the given (studies, observations) clue
    probabilities instead of the model's own perception."""
    generated = generate_reports(
        generator,
        [record["images"] for record in records],
        batch_size=batch_size,
        num_beams=num_beams,
        study_inputs={"clue_probabilities": torch.from_numpy(clue_probabilities)},
    )
    return [result["report"] for result in generated]


def swapped_clues(generator, records: list[dict], num_beams: int, batch_size: int = 64) -> dict:
    """Reports written with the clues of another test study (study i gets those of study i + n/2 mod n).

    Where the donor's clue for an observation (positive or not) differs from the study's own, a report that reads
    its clues says what the donor's clue says: ``follow_rate`` is the fraction of those (study, observation) pairs
    whose CE label (positive or not) of the swapped report equals the donor's clue, ``control_rate`` the same fraction
    for the report written with the study's own clues (how often it agrees with the donor by chance).
    """
    names = list(generator.model.config.observation_names)
    own = np.array([[record["probabilities"][name] for name in names] for record in records], dtype=np.float32)
    donors = (np.arange(len(records)) + len(records) // 2) % len(records)
    thresholds = np.asarray(generator.model.config.thresholds())
    own_clues = own >= thresholds
    donor_clues = own_clues[donors]
    generated = given_clue_reports(generator, records, own[donors], num_beams, batch_size)
    swapped = positive_matrix([label_report(report) for report in generated])
    written = positive_matrix([label_report(record["prediction"]) for record in records])
    differs = own_clues != donor_clues
    pairs = int(differs.sum())
    per_observation = {}
    for index, name in enumerate(names):
        mask = differs[:, index]
        if mask.any():
            per_observation[name] = {
                "pairs": int(mask.sum()),
                "follow_rate": float((swapped[mask, index] == donor_clues[mask, index]).mean()),
            }
    return {
        "pairs": pairs,
        "follow_rate": float((swapped[differs] == donor_clues[differs]).mean()) if pairs else float("nan"),
        "control_rate": float((written[differs] == donor_clues[differs]).mean()) if pairs else float("nan"),
        "changed_reports": float(np.mean([g != r["prediction"] for g, r in zip(generated, records)])),
        "per_observation": per_observation,
    }


def _references(annotation, image_root, model_dir, output_dir: Path, meteor, echo) -> dict:
    """The reference systems' scores (computed once; they do not depend on the training seed)."""
    path = output_dir / REFERENCES_RECORD
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    echo("Scoring the reference systems ...")
    processor = AutoProcessor.from_pretrained(model_dir)
    references = reference_reports(processor, [entry["report"] for entry in annotation["test"]])
    systems = baseline_reports(annotation, image_root, model_dir, len(references))
    train_reports, train_labels = _training_reports(processor, annotation)
    truth = positive_matrix([label_report(report) for report in references])
    systems[ORACLE] = label_retrieval_reports(train_labels, train_reports, truth)
    results = {
        name: _scores(evaluate_reports(reports, references, meteor=meteor)) for name, reports in systems.items()
    }
    path.write_text(json.dumps(results, indent=2), encoding="utf-8")
    return results


def _lookup(result: dict, keys: tuple[str, ...]) -> float | None:
    for key in keys:
        result = result[key]
    return result


def _spread(values: list[float | None]) -> dict:
    """Mean and sample standard deviation (0 for one value); None where a metric was unavailable."""
    if any(value is None for value in values):
        return {"mean": None, "std": None, "values": values}
    array = np.asarray(values, dtype=float)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return {"mean": float(array.mean()), "std": std, "values": [float(v) for v in array]}


def _summary(spec, profile, seeds, ablation_seeds, data_settings, annotation, runs, references) -> dict:
    systems = {}
    for variant, records in runs.items():
        systems[f"{spec.display_name} ({variant})"] = [record["metrics"] for record in records]
    systems[CLASSIFIER_RETRIEVAL] = [record["classifier_retrieval"] for record in runs[RECIPE]]
    if "true_label_clues" in runs[RECIPE][0]:
        systems[TRUE_LABEL_CLUES.format(spec.display_name)] = [r["true_label_clues"] for r in runs[RECIPE]]
    for name in REFERENCE_NAMES:
        systems[name] = [references[name]]
    table = {
        name: {
            **{metric: _spread([_lookup(r, keys) for r in results]) for metric, keys in SUMMARY_METRICS},
            "per_observation_f1": {
                obs: _spread([r["ce"]["per_observation"][obs]["f1"] for r in results]) for obs in CHEXPERT_OBSERVATIONS
            },
        }
        for name, results in systems.items()
    }
    macro = "CE macro F1"
    variants = {}
    for variant, records in runs.items():
        model = [record["metrics"]["ce"]["macro"]["f1"] for record in records]
        baseline_scores = [references[name]["ce"]["macro"]["f1"] for name in BASELINE_NAMES]
        variants[variant] = {
            "seeds": [record["plan"]["seed"] for record in records],
            "seeds_beating_both_baselines": sum(score > max(baseline_scores) for score in model),
            "distinct_reports": [record["distinct_reports"] for record in records],
            "train_seconds": _spread([record["train_seconds"] for record in records]),
            "perception_macro_auroc": _spread([record["perception"]["macro_auroc"] for record in records]),
            "perception_auroc": {
                obs: _spread([record["perception"]["observations"][obs]["auroc"] for record in records])
                for obs in records[0]["perception"]["observations"]
            },
        }
        if "swapped_clues" in records[0]:
            for key in ("follow_rate", "control_rate", "changed_reports"):
                variants[variant][f"swapped_clues_{key}"] = _spread([r["swapped_clues"][key] for r in records])
    test_support = runs[RECIPE][0]["metrics"]["ce"]["per_observation"]
    return {
        "method": spec.name,
        "display_name": spec.display_name,
        "profile": profile,
        "seeds": seeds,
        "ablation_seeds": ablation_seeds,
        "data": data_settings,
        "studies": {split: len(entries) for split, entries in annotation.items()},
        "test_support": {obs: test_support[obs]["support"] for obs in CHEXPERT_OBSERVATIONS},
        "settings": runs[RECIPE][0]["plan"]["settings"],
        "systems": table,
        "variants": variants,
        "macro_ce_f1": {name: table[name][macro]["mean"] for name in table},
        "environment": run_environment(),
    }


def _cell(spread: dict, digits: int = 4) -> str:
    if spread["mean"] is None:
        return "n/a"
    if len(spread["values"]) == 1:
        return f"{spread['mean']:.{digits}f}"
    return f"{spread['mean']:.{digits}f} ± {spread['std']:.{digits}f}"


def results_markdown(summary: dict) -> str:
    """The benchmark's tables: metrics (mean ± std over seeds), per-variant facts, per-observation F1 and AUROC."""
    systems = summary["systems"]
    names = list(systems)
    seeds = summary["seeds"]
    lines = [
        f"# Quality benchmark: {summary['display_name']}, profile {summary['profile']}",
        "",
        "Phantom radiographs: a check that the method learns to read what the data generator draws, not clinical "
        "performance. Research use only.",
        "",
        f"Data: {summary['data']}, studies {summary['studies']}; seeds {seeds} (ablations: "
        f"{summary['ablation_seeds']}); environment "
        f"{json.dumps(summary['environment'])}.",
        "Trained systems: mean ± sample standard deviation over the seeds; reference systems are deterministic.",
        "",
        "| Metric | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for metric, _ in SUMMARY_METRICS:
        lines.append(f"| {metric} | " + " | ".join(_cell(systems[name][metric]) for name in names) + " |")
    lines += ["", "| Variant | seeds beating both baselines (macro CE-F1) | distinct test reports | training s |"]
    lines.append("|---|---:|---|---:|")
    for variant, facts in summary["variants"].items():
        lines.append(
            f"| {variant} | {facts['seeds_beating_both_baselines']} of {len(facts['seeds'])} | "
            f"{facts['distinct_reports']} | {_cell(facts['train_seconds'], 0)} |"
        )
    swapped = {v: f for v, f in summary["variants"].items() if "swapped_clues_follow_rate" in f}
    if swapped:
        lines += [
            "",
            "| Variant | swapped clues: CE labels follow them | own reports agree by chance | reports changed |",
        ]
        lines.append("|---|---:|---:|---:|")
        for variant, facts in swapped.items():
            lines.append(
                f"| {variant} | {_cell(facts['swapped_clues_follow_rate'])} | "
                f"{_cell(facts['swapped_clues_control_rate'])} | {_cell(facts['swapped_clues_changed_reports'])} |"
            )
    lines += ["", "## CE F1 per observation (test split)", ""]
    lines.append("| Observation (support) | " + " | ".join(names) + " |")
    lines.append("|---|" + "---:|" * len(names))
    for obs in CHEXPERT_OBSERVATIONS:
        cells = " | ".join(_cell(systems[name]["per_observation_f1"][obs]) for name in names)
        lines.append(f"| {obs} ({summary['test_support'][obs]}) | {cells} |")
    variants = summary["variants"]
    lines += ["", "## Perception AUROC per observation (test split, observations with >= 5 positives)", ""]
    lines.append("| Observation | " + " | ".join(variants) + " |")
    lines.append("|---|" + "---:|" * len(variants))
    observations = list(variants[RECIPE]["perception_auroc"])
    for obs in observations:
        cells = " | ".join(_cell(facts["perception_auroc"][obs], 3) for facts in variants.values())
        lines.append(f"| {obs} | {cells} |")
    macro = " | ".join(_cell(facts["perception_macro_auroc"], 3) for facts in variants.values())
    lines.append(f"| **macro** | {macro} |")
    return "\n".join(lines) + "\n"


def per_observation_figure(summary: dict, path: str | os.PathLike) -> Path:
    """A PNG of per-observation CE F1: the recipe's model (mean, with the seeds' standard deviation), the classifier +
    retrieval pipeline, the baselines and the label oracle side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = summary["systems"]
    names = [f"{summary['display_name']} ({RECIPE})", CLASSIFIER_RETRIEVAL, *BASELINE_NAMES, ORACLE]
    observations = list(CHEXPERT_OBSERVATIONS)
    width = 0.8 / len(names)
    positions = np.arange(len(observations))
    figure, axes = plt.subplots(figsize=(12, 5.5))
    for index, name in enumerate(names):
        spreads = [systems[name]["per_observation_f1"][obs] for obs in observations]
        axes.bar(
            positions + (index - (len(names) - 1) / 2) * width,
            [s["mean"] for s in spreads],
            width,
            yerr=[s["std"] for s in spreads] if len(spreads[0]["values"]) > 1 else None,
            label=name,
            capsize=2,
        )
    axes.set_xticks(positions)
    axes.set_xticklabels([f"{obs} ({summary['test_support'][obs]})" for obs in observations], rotation=40, ha="right")
    axes.set_ylabel("CE F1 (test split)")
    # headroom above 1 keeps the legend clear of the bars
    axes.set_ylim(0, 1.3)
    axes.set_yticks(np.linspace(0, 1, 6))
    axes.set_title(
        f"{summary['display_name']}, profile {summary['profile']}, {len(summary['seeds'])} seeds (phantom data)"
    )
    axes.legend(fontsize=8, ncols=3, loc="upper center")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


__all__ = [
    "CLASSIFIER_RETRIEVAL",
    "ORACLE",
    "PROFILES",
    "per_observation_figure",
    "results_markdown",
    "run_benchmark",
    "swapped_clues",
]
