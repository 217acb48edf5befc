"""`cxrgen demo`: the whole pipeline offline on CPU in minutes, on phantom radiographs.

1. Build the phantom benchmark (``source="auto"``: the real IU-Xray report texts when the NLM archive is installed,
   with phantoms rendered from the labels the project's labeler gives each report; else synthetic reports).
2. Train a small CMCRL: its ResNet first as a classifier of the 14 observations (``cxrgen.trainers.backbone``),
   then VLCI (``cxrgen.trainers.vlci``) with that backbone frozen and studies drawn by the rarity of their findings.
3. Evaluate it on the test split (``cxrgen.evaluation.report.evaluate_model``) next to two baselines: the most
   frequent training report, and the training report of the nearest training study by image pixels.
4. Print and save the metric table of the three systems, save the model folder with its card (phantom data
   flagged, test metrics), and print a generated report beside its reference.

Phantom numbers check the pipeline end to end; they say nothing about clinical performance.
"""

import json
import platform
import time
from pathlib import Path

import torch
import transformers

from cxrgen.data.annotation import read_annotation
from cxrgen.data.iu_xray import find_nlm_reports_archive
from cxrgen.data.phantom_benchmark import IMAGES_DIR, build_phantom_benchmark
from cxrgen.evaluation.baselines import most_frequent_report, nearest_neighbour_reports
from cxrgen.evaluation.metrics import evaluate_reports
from cxrgen.evaluation.predictions import write_predictions
from cxrgen.evaluation.report import (
    evaluate_model,
    load_split,
    markdown_metrics_table,
    reference_reports,
    study_paths,
)
from cxrgen.labels import CHEXPERT_OBSERVATIONS, POSITIVE
from cxrgen.modeling.trrg.configuration_trrg import TINY_VISION_CONFIG

# The demo's CMCRL: 64 px views through a three-stage basic-block ResNet of stride 16 (4x4 tokens per view; the
# token count, not the image size, sets the cost of a step), width 128, 2+2 layers, VDM and LDM on. No dropout: a
# run of a few epochs does not overfit, and dropout costs about a sixth of a CPU step.
# Trained from scratch on report text alone, such a model writes the normal report for every study (benchmarks/DEMO.md),
# so the backbone is first trained to recognise the 14 observations (`cxrgen.trainers.backbone`, standing in for the
# reference's ImageNet weights), then kept frozen while VLCI trains on studies drawn by the rarity of their findings.
CMCRL_DEMO = {
    "image_size": 64,
    "backbone_epochs": 10,
    "backbone_batch_size": 64,
    "backbone_learning_rate": 3e-3,
    "max_steps": 600,
    "num_beams": 1,
    "batch_size": 32,
    "learning_rate": 2e-3,
    "balance_power": 1.0,
    "model": {
        "freeze_backbone": True,
        "hidden_size": 128,
        "num_attention_heads": 4,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "intermediate_size": 256,
        "encoder_layers": 2,
        "decoder_layers": 2,
        "backbone_stride": 16,
        "backbone_config": {
            "model_type": "resnet",
            "embedding_size": 8,
            "hidden_sizes": [16, 32, 64],
            "depths": [1, 1, 1],
            "layer_type": "basic",
            "out_features": ["stage3"],
        },
        "local_top_k": 4,
        "global_num_heads": 4,
        "global_head_dim": 32,
        "ldm_intermediate_size": 256,
        "max_report_length": 60,
        "max_position_embeddings": 128,
    },
}
# The demo's TRRG: the `tiny` presets of both stages (a Swin tower of 64 px, a 2-layer Llama-style LLM of width 64 with
# the report vocabulary, disease clues from the stage-1 zero-shot head); stage 1 then stage 2, 800 steps each.
TRRG_DEMO = {
    "image_size": TINY_VISION_CONFIG["image_size"],
    "contrastive_steps": 800,
    "contrastive_batch_size": 32,
    "max_steps": 800,
    "num_beams": 1,
    "batch_size": 16,
    "model": {},
}
DEMO_SETTINGS = {"cmcrl": CMCRL_DEMO, "trrg": TRRG_DEMO}
SYSTEM_NAMES = {"cmcrl": "CMCRL (trained)", "trrg": "TRRG (trained)"}
BASELINE_NAMES = ("most frequent report", "nearest neighbour (pixels)")


def run_demo(
    output_dir,
    method="cmcrl",
    source="auto",
    image_size=None,
    max_studies=None,
    max_steps=None,
    num_beams=None,
    seed=0,
    model_overrides=None,
    batch_size=None,
    synthetic_studies=1000,
    echo=print,
):
    """Run the demo into ``output_dir`` (which must be new or empty) and return its summary dict.

    ``method`` is "cmcrl" or "trrg". Arguments left as None take the method's demo setting (:data:`CMCRL_DEMO`,
    :data:`TRRG_DEMO`); ``model_overrides`` replace entries of its model config (e.g. for a smaller smoke run).
    ``echo`` receives the lines printed for the user.
    """
    if method not in DEMO_SETTINGS:
        raise ValueError(f"The demo trains one of {sorted(DEMO_SETTINGS)}, not {method!r}.")
    started = time.perf_counter()
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        raise ValueError(f"{output_dir} is not empty: choose a new --output folder (the demo never mixes runs).")
    settings = _settings(DEMO_SETTINGS[method], image_size, max_steps, num_beams, batch_size, model_overrides)
    if method == "trrg" and settings["image_size"] != TRRG_DEMO["image_size"]:
        raise ValueError(
            f"image-size: the TRRG demo's Swin tower (the `tiny` preset) takes {TRRG_DEMO['image_size']} px "
            f"images, got {settings['image_size']}."
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
    if method == "cmcrl":
        echo(
            f"[2/4] Training a small CMCRL: backbone warm-up ({settings['backbone_epochs']} epochs), then VLCI "
            f"({settings['max_steps']} steps) ..."
        )
        _train_cmcrl(annotation_path, image_root, output_dir / "backbone", model_dir, settings, source, seed)
    else:
        echo(
            f"[2/4] Training a small TRRG: contrastive stage 1 ({settings['contrastive_steps']} steps), then stage 2 "
            f"({settings['max_steps']} steps) ..."
        )
        _train_trrg(annotation_path, image_root, output_dir / "contrastive", model_dir, settings, source, seed)
    timings["train"] = time.perf_counter() - mark

    echo("[3/4] Evaluating on the test split ...")
    mark = time.perf_counter()
    evaluation = evaluate_model(
        model_dir,
        annotation_path,
        image_root,
        split="test",
        output_dir=output_dir / "evaluation",
        batch_size=64,
        num_beams=settings["num_beams"],
    )
    timings["evaluate model"] = time.perf_counter() - mark

    echo("[4/4] Scoring the baselines ...")
    mark = time.perf_counter()
    references = [record["reference"] for record in evaluation["records"]]
    baseline_reports = _baselines(annotation, image_root, model_dir, len(references))
    results = {SYSTEM_NAMES[method]: evaluation["metrics"]}
    for name, reports in baseline_reports.items():
        results[name] = evaluate_reports(reports, references)
        write_predictions(
            [
                {"id": r["id"], "prediction": p, "reference": r["reference"]}
                for r, p in zip(evaluation["records"], reports)
            ],
            output_dir / "baselines" / f"{name.split(' (')[0].replace(' ', '_')}.jsonl",
        )
    timings["baselines"] = time.perf_counter() - mark

    _write_card(model_dir, method, source, settings, evaluation["metrics"])
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


def _settings(defaults, image_size, max_steps, num_beams, batch_size, model_overrides):
    given = {"image_size": image_size, "max_steps": max_steps, "num_beams": num_beams, "batch_size": batch_size}
    settings = {**defaults, **{key: value for key, value in given.items() if value is not None}}
    for key in given:
        if not isinstance(settings[key], int) or settings[key] < 1:
            raise ValueError(f"{key.replace('_', '-')} must be a positive integer, got {settings[key]!r}.")
    if max_steps is not None and "contrastive_steps" in settings:
        settings["contrastive_steps"] = max_steps  # TRRG: the same number of steps for both stages
    settings["model"] = {**defaults["model"], **(model_overrides or {})}
    return settings


def _train_cmcrl(annotation_path, image_root, backbone_dir, model_dir, settings, source, seed):
    from cxrgen.trainers import backbone, vlci

    common = _trainer_settings(seed)
    model = {**settings["model"], "image_size": settings["image_size"]}
    backbone.run(
        {
            "preset": "tiny",
            "model": model,
            "data": {"augment": False},
            "training": {
                **common,
                "num_train_epochs": settings["backbone_epochs"],
                "per_device_train_batch_size": settings["backbone_batch_size"],
                "learning_rate": settings["backbone_learning_rate"],
            },
            "card": {**_card_names("cmcrl", source), "model_name": "cxrgen demo CMCRL backbone (phantom radiographs)"},
        },
        annotation_path,
        image_root,
        backbone_dir,
    )
    config = {
        "preset": "tiny",
        "model": model,
        "processor": {"min_frequency": 3},
        "data": {"augment": False, "balance_power": settings["balance_power"]},
        "training": {
            "max_steps": settings["max_steps"],
            "per_device_train_batch_size": settings["batch_size"],
            "learning_rate": settings["learning_rate"],
            "lr_scheduler_type": "linear",
            "warmup_steps": 30,
            "weight_decay": 0.01,
            **common,
        },
        "card": _card_names("cmcrl", source),
    }
    vlci.run(config, annotation_path, image_root, model_dir, init=backbone_dir)


def _train_trrg(annotation_path, image_root, contrastive_dir, model_dir, settings, source, seed):
    from cxrgen.trainers import trrg, trrg_contrastive

    common = _trainer_settings(seed)
    trrg_contrastive.run(
        {
            "preset": "tiny",
            "processor": {"min_frequency": 3},
            "training": {
                **common,
                "max_steps": settings["contrastive_steps"],
                "per_device_train_batch_size": settings["contrastive_batch_size"],
            },
            "card": {**_card_names("trrg", source), "model_name": "cxrgen demo TRRG stage 1 (phantom radiographs)"},
        },
        annotation_path,
        image_root,
        contrastive_dir,
    )
    trrg.run(
        {
            "preset": "tiny",
            "model": settings["model"],
            "processor": {"min_frequency": 3},
            "training": {
                **common,
                "max_steps": settings["max_steps"],
                "per_device_train_batch_size": settings["batch_size"],
                "generation_num_beams": settings["num_beams"],
            },
            "card": _card_names("trrg", source),
        },
        annotation_path,
        image_root,
        model_dir,
        init=contrastive_dir,
    )


def _trainer_settings(seed):
    # The demo evaluates once, on the test split, after training; checkpoints would only cost time. Random crops of
    # 64 px phantoms shift findings by several pixels, so the CMCRL stages do not augment (the TRRG stages never do).
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
    name = {"cmcrl": "CMCRL", "trrg": "TRRG"}[method]
    return {
        "model_name": f"cxrgen demo {name} (phantom radiographs)",
        "repo_id": f"your-username/cxrgen-demo-{method}",
        "dataset_name": f"cxrgen phantom benchmark ({'IU-Xray report texts' if source == 'iu' else 'synthetic reports'})",
        "dataset_id": f"cxrgen-phantom-{source}",
        "phantom_data": True,
    }


def _baselines(annotation, image_root, model_dir, num_test):
    """The two baselines' reports for the test studies, in the form the model writes (cleaned like its targets)."""
    from PIL import Image
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir)
    train = load_split(annotation, image_root, "train")
    test = load_split(annotation, image_root, "test")
    if len(test) != num_test:
        raise ValueError(f"The test split has {len(test)} studies but {num_test} were evaluated.")
    train_reports = reference_reports(processor, train["report"])

    def load(paths):
        return [[Image.open(path) for path in views] for views in paths]

    return {
        BASELINE_NAMES[0]: [most_frequent_report(train_reports)] * num_test,
        BASELINE_NAMES[1]: nearest_neighbour_reports(load(study_paths(train)), train_reports, load(study_paths(test))),
    }


def _write_card(model_dir, method, source, settings, metrics):
    from cxrgen.hub_cards import build_model_card, save_model_card
    from cxrgen.trainers.common import METRIC_NAMES, flatten_metrics

    names = _card_names(method, source)
    card = build_model_card(
        model_dir,
        model_name=names["model_name"],
        repo_id=names["repo_id"],
        method=method,
        metrics={METRIC_NAMES[key]: value for key, value in flatten_metrics(metrics).items()},
        dataset_name=names["dataset_name"],
        dataset_id=names["dataset_id"],
        dataset_split="test",
        metrics_source_description=(
            f"`cxrgen demo`: reports generated for the phantom test split ({settings['num_beams']} beam(s)), scored "
            "with cxrgen.evaluation.evaluate_reports (pycocoevalcap NLG metrics against the whole cleaned reports; "
            "clinical efficacy from the cxrgen rule-based labeler on both sides)"
        ),
        is_phantom_data=True,
        training_setup=_training_setup(method, settings),
    )
    save_model_card(card, model_dir)


def _training_setup(method, settings):
    common = {"image size": settings["image_size"], "batch size": settings["batch_size"], "model": settings["model"]}
    if method == "trrg":
        return {
            "stage": "TRRG stage 2 (clue-enhanced LLM fine-tuning), `cxrgen demo`",
            "stage 1": f"disease-aware contrastive pre-training, {settings['contrastive_steps']} steps, batch "
            f"{settings['contrastive_batch_size']} (`tiny` preset)",
            "steps": settings["max_steps"],
            "learning rate": "the `tiny` preset's",
            **common,
        }
    return {
        "stage": "VLCI fine-tuning (no RadCARE pre-training), `cxrgen demo`",
        "vision backbone": (
            f"trained first as a classifier of the 14 observations of the training reports "
            f"({settings['backbone_epochs']} epochs, lr {settings['backbone_learning_rate']}), then frozen"
        ),
        "steps": settings["max_steps"],
        "learning rate": f"{settings['learning_rate']} (linear decay, 30 warm-up steps)",
        "observation-balanced sampling (power)": settings["balance_power"],
        **common,
    }


def per_observation_f1_table(results):
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
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "torch_threads": torch.get_num_threads(),
            "machine": platform.machine(),
        },
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
    settings = {key: value for key, value in summary["settings"].items() if key != "model"}
    lines = [
        "# cxrgen demo results",
        "",
        "Phantom radiographs: a pipeline check, not clinical performance. Research use only.",
        "",
        f"Data: phantom benchmark, {summary['source']} reports, studies {summary['studies']}.",
        f"Settings: {json.dumps(settings)}; model overrides: {json.dumps(summary['settings']['model'])}.",
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
