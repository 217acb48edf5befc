"""`cxrgen demo`: the whole pipeline offline on CPU in minutes, on phantom radiographs.

1. Build the phantom benchmark (``source="auto"``: the real IU-Xray report texts when the NLM archive is installed,
   with phantoms rendered from the labels the project's labeler gives each report; else synthetic reports).
2. Train a small model of the method by its recipe, the ``demo`` section of its demo preset (e.g.
   ``cxrgen/modeling/cmcrl/presets/tiny.yaml``): each stage in turn, from the previous stage's folder. CMCRL trains
   its ResNet first as a classifier of the 14 observations, then VLCI with that backbone frozen and studies drawn by
   the rarity of their findings; TRRG its contrastive stage 1, then stage 2.
3. Evaluate it on the test split (``cxrgen.evaluation.report.evaluate_model``) next to two baselines: the most
   frequent training report, and the training report of the nearest training study by image pixels.
4. Print and save the metric table of the three systems, save the model folder with its card (phantom data
   flagged, test metrics), and print a generated report beside its reference.

Phantom numbers check the pipeline end to end; they say nothing about clinical performance.
"""

import copy
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image
from transformers import AutoProcessor

from cxrgen.data.annotation import read_annotation
from cxrgen.data.iu_xray import find_nlm_reports_archive
from cxrgen.data.phantom_benchmark import IMAGES_DIR, build_phantom_benchmark
from cxrgen.environment import run_environment
from cxrgen.evaluation.baselines import most_frequent_report, nearest_neighbour_reports
from cxrgen.evaluation.metrics import MeteorScorer, evaluate_reports
from cxrgen.evaluation.predictions import write_predictions
from cxrgen.evaluation.report import (
    evaluate_model,
    load_split,
    markdown_metrics_table,
    reference_reports,
    study_paths,
)
from cxrgen.labels import CHEXPERT_OBSERVATIONS, POSITIVE
from cxrgen.methods import DEFAULT_METHOD, METHODS, Method, find_stage, get_method
from cxrgen.presets import load_preset
from cxrgen.trainers.metrics import card_metrics
from cxrgen.trainers.model_folders import CardInfo, write_model_card
from cxrgen.trainers.stage_config import get_stage

BASELINE_NAMES = ("most frequent report", "nearest neighbour (pixels)")


def run_demo(
    output_dir: str | os.PathLike,
    method: str = DEFAULT_METHOD,
    source: str = "auto",
    image_size: int | None = None,
    max_studies: int | None = None,
    max_steps: int | None = None,
    num_beams: int | None = None,
    seed: int = 0,
    model_overrides: dict | None = None,
    batch_size: int | None = None,
    synthetic_studies: int = 1000,
    echo: Callable[[str], object] = print,
) -> dict:
    """Run the demo into ``output_dir`` (which must be new or empty) and return its summary dict.

    ``method`` is a registered method (:data:`cxrgen.methods.METHODS`); its recipe is the ``demo`` section of its
    demo preset (:func:`cxrgen.presets.load_preset`). Arguments left as None keep the recipe's settings; given, they
    override it: ``image_size`` the phantoms' size and ``model.image_size`` where a stage sets it (a recipe where none
    does, its vision tower fixing the size, refuses another one); ``max_steps`` ``training.max_steps`` where a stage
    sets it; ``batch_size`` the last stage's ``per_device_train_batch_size``; ``num_beams`` the evaluation's beams and
    ``training.generation_num_beams`` where set; ``model_overrides`` are merged into the ``model`` of every stage that
    has one (e.g. for a smaller smoke run). ``echo`` receives the lines printed for the user.
    """
    if method not in METHODS:
        raise ValueError(f"The demo trains one of {sorted(METHODS)}, not {method!r}.")
    spec = get_method(method)
    started = time.perf_counter()
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        raise ValueError(f"{output_dir} is not empty: choose a new --output folder (the demo never mixes runs).")
    preset = load_preset(method, spec.demo_preset)
    if "demo" not in preset:
        raise ValueError(f"The {spec.demo_preset!r} preset of {method} has no demo section (the demo's recipe).")
    settings, sized = recipe_settings(preset["demo"], image_size, max_steps, num_beams, batch_size, model_overrides)
    if not sized and settings["image_size"] != preset["demo"]["image_size"]:
        raise ValueError(
            f"image-size: the {spec.display_name} demo's vision tower (the `{spec.demo_preset}` preset) takes "
            f"{preset['demo']['image_size']} px images, got {settings['image_size']}."
        )
    if source == "auto":
        source = "iu" if find_nlm_reports_archive() is not None else "synthetic"
    timings = {}

    echo(f"[1/4] Building the phantom benchmark ({source} reports, {settings['image_size']} px) ...")
    data_dir = output_dir / "data"
    annotation_path = build_phantom_benchmark(
        data_dir,
        source=source,
        image_size=settings["image_size"],
        max_studies=max_studies,
        seed=seed,
        synthetic_studies=synthetic_studies,
    )
    image_root = data_dir / IMAGES_DIR
    annotation = read_annotation(annotation_path)
    timings["build data"] = time.perf_counter() - started
    echo("      " + ", ".join(f"{split} {len(entries)}" for split, entries in annotation.items()) + " studies")

    mark = time.perf_counter()
    model_dir = output_dir / "model"
    steps = ", then ".join(f"{entry['title']} ({_amount(entry['training'])})" for entry in settings["stages"])
    echo(f"[2/4] Training a small {spec.display_name}: {steps} ...")
    train_recipe(spec, settings["stages"], annotation_path, image_root, output_dir, model_dir, source, seed)
    timings["train"] = time.perf_counter() - mark

    echo("[3/4] Evaluating on the test split ...")
    mark = time.perf_counter()
    # One METEOR process for the three systems: its JVM start-up costs seconds, and it overlaps the generation.
    with MeteorScorer() as meteor:
        evaluation = evaluate_model(
            model_dir,
            annotation_path,
            image_root,
            split="test",
            output_dir=output_dir / "evaluation",
            batch_size=64,
            num_beams=settings["num_beams"],
            meteor=meteor,
        )
        timings["evaluate model"] = time.perf_counter() - mark

        echo("[4/4] Scoring the baselines ...")
        mark = time.perf_counter()
        references = [record["reference"] for record in evaluation["records"]]
        baselines = baseline_reports(annotation, image_root, model_dir, len(references))
        results = {f"{spec.display_name} (trained)": evaluation["metrics"]}
        for name, reports in baselines.items():
            results[name] = evaluate_reports(reports, references, meteor=meteor)
            write_predictions(
                [
                    {"id": r["id"], "prediction": p, "reference": r["reference"]}
                    for r, p in zip(evaluation["records"], reports)
                ],
                output_dir / "baselines" / f"{name.split(' (')[0].replace(' ', '_')}.jsonl",
            )
    timings["baselines"] = time.perf_counter() - mark

    _write_card(model_dir, spec, source, settings, evaluation["metrics"])
    timings["total"] = time.perf_counter() - started
    summary = _summary(results, settings, source, annotation, timings, seed, max_studies)
    (output_dir / "results.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    table = markdown_metrics_table(results)
    per_observation = per_observation_f1_table(results)
    (output_dir / "results.md").write_text(_results_markdown(summary, table, per_observation), encoding="utf-8")

    echo("")
    echo(table)
    echo("")
    echo(per_observation)
    echo("")
    echo(_verdict(summary))
    example = _example(evaluation["records"], annotation["test"])
    echo("")
    echo(f"Test study {example['id']} ({', '.join(example['images'])})")
    echo(f"  reference: {example['reference']}")
    echo(f"  generated: {example['prediction']}")
    echo("")
    echo(f"Model folder (with its card): {model_dir}")
    echo(f"Results: {output_dir / 'results.md'}, evaluation report: {evaluation['paths']['report']}")
    echo(
        f"Wall time: {timings['total']:.0f} s ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items() if k != "total")
        + ")"
    )
    return summary


def recipe_settings(
    recipe: dict,
    image_size: int | None = None,
    max_steps: int | None = None,
    num_beams: int | None = None,
    batch_size: int | None = None,
    model_overrides: dict | None = None,
) -> tuple[dict, bool]:
    """A demo recipe's settings and stage configs with the arguments given applied (see :func:`run_demo`), and
    whether a stage's model takes ``image_size``."""
    stages = copy.deepcopy(recipe["stages"])
    for entry in stages:
        entry.setdefault("training", {})
    last = stages[-1]["training"]
    given = {"image_size": image_size, "max_steps": max_steps, "num_beams": num_beams, "batch_size": batch_size}
    for key, value in given.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{key.replace('_', '-')} must be a positive integer, got {value!r}.")
    counted = [entry["training"] for entry in stages if "max_steps" in entry["training"]]
    if max_steps is not None and not counted:
        raise ValueError("max-steps: no stage of this demo trains by steps.")
    if batch_size is not None:
        last["per_device_train_batch_size"] = batch_size
    sized = False
    for entry in stages:
        training = entry["training"]
        if max_steps is not None and "max_steps" in training:
            training["max_steps"] = max_steps
        if num_beams is not None and "generation_num_beams" in training:
            training["generation_num_beams"] = num_beams
        if "model" in entry:
            entry["model"] = {**entry["model"], **(model_overrides or {})}
            if "image_size" in entry["model"]:
                sized = True
                if image_size is not None:
                    entry["model"]["image_size"] = image_size
    settings = {
        "image_size": recipe["image_size"] if image_size is None else image_size,
        # For the results: the steps of the last stage that counts them (the report generator, in both recipes).
        "max_steps": counted[-1]["max_steps"] if counted else None,
        "num_beams": recipe["num_beams"] if num_beams is None else num_beams,
        "batch_size": last.get("per_device_train_batch_size"),
    }
    return {**settings, "stages": stages}, sized


def _amount(training):
    """How long a stage trains, as the demo prints it."""
    if "max_steps" in training:
        return f"{training['max_steps']} steps"
    return f"{training.get('num_train_epochs', 'the stage default of')} epochs"


def train_recipe(
    method: Method,
    stages: list[dict],
    annotation_path: str | os.PathLike,
    image_root: str | os.PathLike,
    output_dir: str | os.PathLike,
    model_dir: str | os.PathLike,
    source: str,
    seed: int,
    init: str | os.PathLike | None = None,
) -> None:
    """Run a recipe's stage configs in turn, each from the previous one's folder (``output_dir/<folder>``; the first
    from ``init`` when given); the last one writes ``model_dir``. ``source`` names the phantom reports on the cards."""
    for entry in stages:
        config = {"preset": method.demo_preset}
        config.update({key: entry[key] for key in ("model", "processor", "data") if key in entry})
        config["training"] = {**entry["training"], **_trainer_settings(seed)}
        config["card"] = _card_names(method, source)
        folder = model_dir
        if "folder" in entry:
            folder = Path(output_dir) / entry["folder"]
            config["card"]["model_name"] = f"cxrgen demo {method.display_name} {entry['title']} (phantom radiographs)"
        get_stage(entry["stage"])(config, annotation_path, image_root, folder, init=init)
        init = folder


def _trainer_settings(seed):
    # The demo evaluates once, on the test split, after training; checkpoints would only cost time.
    return {
        "report_to": "none",
        "use_cpu": True,
        "seed": seed,
        "eval_strategy": "no",
        "save_strategy": "no",
        "load_best_model_at_end": False,
        "logging_steps": 50,
    }


def _card_names(method, source):
    return {
        "model_name": f"cxrgen demo {method.display_name} (phantom radiographs)",
        "repo_id": f"your-username/cxrgen-demo-{method.name}",
        "dataset_name": f"cxrgen phantom benchmark ({'IU-Xray report texts' if source == 'iu' else 'synthetic reports'})",
        "dataset_id": f"cxrgen-phantom-{source}",
        "phantom_data": True,
    }


def baseline_reports(
    annotation: dict, image_root: str | os.PathLike, model_dir: str | os.PathLike, num_test: int
) -> dict[str, list[str]]:
    """The two baselines' reports for the test studies, in the form the model of ``model_dir`` writes (cleaned like
    its targets), by :data:`BASELINE_NAMES`."""
    processor = AutoProcessor.from_pretrained(model_dir)
    # Training decode-checked every training image and the evaluation every test image, minutes ago.
    train = load_split(annotation, image_root, "train", skip_image_check=True)
    test = load_split(annotation, image_root, "test", skip_image_check=True)
    if len(test) != num_test:
        raise ValueError(f"The test split has {len(test)} studies but {num_test} were evaluated.")
    train_reports = reference_reports(processor, train["report"])

    def load(paths):
        return [[Image.open(path) for path in views] for views in paths]

    return {
        BASELINE_NAMES[0]: [most_frequent_report(train_reports)] * num_test,
        BASELINE_NAMES[1]: nearest_neighbour_reports(load(study_paths(train)), train_reports, load(study_paths(test))),
    }


def _write_card(model_dir: Path, method: Method, source: str, settings: dict, metrics: dict) -> None:
    """The model folder's card: the phantom test split's metrics and the demo's recipe as its training setup."""
    names = _card_names(method, source)
    info = CardInfo(
        method=method.name,
        model_name=names["model_name"],
        repo_id=names["repo_id"],
        dataset_name=names["dataset_name"],
        dataset_id=names["dataset_id"],
        is_phantom_data=True,
        training_setup=_training_setup(method, settings),
        metrics_split="test",
        metrics_source_description=(
            f"`cxrgen demo`: reports generated for the phantom test split ({settings['num_beams']} beam(s)), scored "
            "with cxrgen.evaluation.evaluate_reports (pycocoevalcap NLG metrics against the whole cleaned reports; "
            "clinical efficacy from the cxrgen rule-based labeler on both sides)"
        ),
    )
    write_model_card(model_dir, info, card_metrics(metrics))


def _training_setup(method, settings):
    setup = {"recipe": f"`cxrgen demo --model {method.name}`: the demo section of the `{method.demo_preset}` preset"}
    for entry in settings["stages"]:
        training = entry["training"]
        shown = ("max_steps", "num_train_epochs", "per_device_train_batch_size")
        details = {key: value for key, value in training.items() if key not in shown}
        details.update({key: entry[key] for key in ("processor", "data") if entry.get(key)})
        row = f"{find_stage(entry['stage'])[1].summary}, {_amount(training)}"
        if "per_device_train_batch_size" in training:
            row += f", batch {training['per_device_train_batch_size']}"
        setup[entry["title"]] = row + (f"; {json.dumps(details)}" if details else "")
    setup["image size"] = settings["image_size"]
    setup["model"] = settings["stages"][-1].get("model") or f"the `{method.demo_preset}` preset's"
    return setup


def per_observation_f1_table(results: dict[str, dict]) -> str:
    """A Markdown table of per-observation CE F1 (with the test support), one column per system."""
    names = list(results)
    first = results[names[0]]["ce"]["per_observation"]
    lines = ["| Observation (support) | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for observation in CHEXPERT_OBSERVATIONS:
        values = " | ".join(f"{results[name]['ce']['per_observation'][observation]['f1']:.3f}" for name in names)
        lines.append(f"| {observation} ({first[observation]['support']}) | {values} |")
    return "\n".join(lines)


def _summary(results, settings, source, annotation, timings, seed, max_studies):
    return {
        "source": source,
        "studies": {split: len(entries) for split, entries in annotation.items()},
        "max_studies": max_studies,
        "seed": seed,
        "settings": settings,
        "macro_ce_f1": {name: result["ce"]["macro"]["f1"] for name, result in results.items()},
        "metrics": results,
        "wall_time_seconds": {key: round(value, 1) for key, value in timings.items()},
        "environment": run_environment(),
    }


def _verdict(summary):
    scores = summary["macro_ce_f1"]
    model, *baselines = scores
    beaten = all(scores[model] > scores[name] for name in baselines)
    detail = ", ".join(f"{name} {value:.4f}" for name, value in scores.items())
    return f"Macro CE-F1: {detail} -> the model {'beats' if beaten else 'does NOT beat'} both baselines."


def _example(records, test_entries):
    """The first test study whose reference has a positive finding (else the first), to show what the model says."""
    for record, entry in zip(records, test_entries):
        labels = entry.get("labels") or []
        if any(code == POSITIVE for name, code in zip(CHEXPERT_OBSERVATIONS, labels) if name != "No Finding"):
            return {**record, "images": entry["image_path"]}
    return {**records[0], "images": test_entries[0]["image_path"]}


def _results_markdown(summary, table, per_observation):
    settings = {key: value for key, value in summary["settings"].items() if key != "stages"}
    lines = [
        "# cxrgen demo results",
        "",
        "Phantom radiographs: a pipeline check, not clinical performance. Research use only.",
        "",
        f"Data: phantom benchmark, {summary['source']} reports, studies {summary['studies']}.",
        f"Settings: {json.dumps(settings)}; stages: {json.dumps(summary['settings']['stages'])}.",
        f"Wall time (s): {json.dumps(summary['wall_time_seconds'])}.",
        "",
        _verdict(summary),
        "",
        "## Metrics (test split)",
        "",
        table,
        "",
        "## CE F1 per observation (test split)",
        "",
        per_observation,
        "",
    ]
    return "\n".join(lines)
