"""An evaluation run of a saved model on one split: predictions (JSONL), metrics (JSON) and a Markdown report.

The Markdown report holds the metric table (NLG and clinical efficacy), the per-observation CE table and a few
example studies with thumbnails of their images, the reference and the generated report, and the figures of
:mod:`cxrgen.visualization` (CMCRL: attention rollout overlays; TRRG: the probability chart with its clues).

References are the annotation's reports cleaned as the model's processor cleans its training targets (CMCRL's
``cleaning_style``), so predictions and references are compared in the same form; a processor without a cleaning
style (TRRG) is compared with the reports as written in the annotation. References are scored whole, however long.

A prediction that used the whole generation budget (``max_new_tokens``, or the model's ``max_length``) was most
likely cut there rather than ended: each record says ``"truncated"``, and the metrics' ``"predictions"`` section
counts them, so short scores caused by the length limit are not mistaken for a weak model.
"""

import json
import os
import time
from pathlib import Path

import datasets
from transformers import PreTrainedModel, ProcessorMixin

from cxrgen.data.annotation import annotation_to_dataset_dict, read_annotation
from cxrgen.evaluation.metrics import CE_AVERAGES, NLG_METRICS, MeteorScorer, evaluate_reports
from cxrgen.evaluation.predictions import write_predictions
from cxrgen.inference import ReportGenerator, generate_reports, load_generator
from cxrgen.processing.cleaning import clean_report
from cxrgen.processing.image_processing_cxr import load_image
from cxrgen.visualization import study_figures

PREDICTIONS_NAME = "predictions.jsonl"
METRICS_NAME = "metrics.json"
REPORT_NAME = "report.md"
EXAMPLES_DIR = "examples"
FIGURES_DIR = "figures"
THUMBNAIL_SIZE = 160


def load_split(
    annotation_or_path: dict | str | os.PathLike,
    image_root: str | os.PathLike,
    split: str,
    skip_image_check: bool = False,
) -> datasets.Dataset:
    """One split of an annotation as a ``datasets.Dataset`` whose ``images`` column holds file paths (not decoded).

    Every image of the split is decode-checked first unless ``skip_image_check``
    (:func:`cxrgen.data.annotation.annotation_to_dataset_dict`).
    """
    annotation = annotation_or_path if isinstance(annotation_or_path, dict) else read_annotation(annotation_or_path)
    if split not in annotation:
        raise ValueError(f"The annotation has no '{split}' split (it has {sorted(annotation)}).")
    if not annotation[split]:
        raise ValueError(f"The annotation's '{split}' split is empty: nothing to evaluate.")
    dataset = annotation_to_dataset_dict(
        {split: annotation[split]}, image_root, skip_image_check=skip_image_check, decode_images=False
    )
    return dataset[split]


def study_paths(dataset: datasets.Dataset) -> list[list[str]]:
    """The image file paths of every study of a :func:`load_split` dataset, views in annotation order."""
    return [[view["path"] for view in views] for views in dataset["images"]]


def reference_reports(processor: ProcessorMixin, reports: list[str]) -> list[str]:
    """Reports in the form the model was trained to write (see the module docstring)."""
    style = getattr(processor, "cleaning_style", None)
    return list(reports) if style is None else [clean_report(report, style) for report in reports]


def generation_budget(model: PreTrainedModel, max_new_tokens: int | None = None) -> int | None:
    """How many report tokens a generation may produce before it is cut: ``max_new_tokens`` when given (or set in
    the model's generation_config), else an encoder-decoder's ``max_length`` less its start token; None when the
    limit also counts a prompt (a decoder-only model with only ``max_length``)."""
    config = model.generation_config
    if max_new_tokens is None:
        max_new_tokens = config.max_new_tokens
    if max_new_tokens is not None:
        return max_new_tokens
    if model.config.is_encoder_decoder and config.max_length is not None:
        return config.max_length - 1
    return None


def truncated_predictions(processor: ProcessorMixin, predictions: list[str], budget: int | None) -> list[bool]:
    """Whether each prediction reached the generation budget (:func:`generation_budget`) instead of ending.

    The decoded report is tokenized again, so tokens that decoding drops (special tokens) are not counted: a report
    flagged here surely hit the limit; one just under it may have hit it too.
    """
    if budget is None:
        return [False] * len(predictions)
    lengths = [len(ids) for ids in processor.tokenizer(list(predictions), add_special_tokens=False)["input_ids"]]
    return [length >= budget for length in lengths]


def truncation_note(metrics: dict) -> str | None:
    """A sentence on the predictions cut at the generation limit, or None when there are none."""
    summary = metrics.get("predictions", {})
    if not summary.get("num_truncated"):
        return None
    shown = ", ".join(summary["truncated_ids"][:10]) + (", ..." if summary["num_truncated"] > 10 else "")
    return (
        f"{summary['num_truncated']} of {metrics['ce']['num_reports']} predictions reached the generation length "
        f"limit and were cut there (ids {shown}); their scores measure a cut report."
    )


def truncation_summary(records: list[dict]) -> dict:
    """``{"num_truncated": n, "truncated_ids": [...]}`` of prediction records carrying a ``"truncated"`` flag."""
    truncated = [record["id"] for record in records if record.get("truncated")]
    return {"num_truncated": len(truncated), "truncated_ids": truncated}


def evaluate_model(
    model_dir: str | os.PathLike,
    annotation: dict | str | os.PathLike,
    image_root: str | os.PathLike,
    split: str = "test",
    output_dir: str | os.PathLike | None = None,
    batch_size: int = 16,
    num_beams: int | None = None,
    max_new_tokens: int | None = None,
    num_examples: int = 3,
    generator: ReportGenerator | None = None,
    allow_pickle: bool = False,
    skip_image_check: bool = False,
    meteor: MeteorScorer | None = None,
) -> dict:
    """Generate reports for every study of ``split``, score them and write the evaluation files.

    Args:
        model_dir: a saved CMCRL or TRRG model folder.
        annotation: an R2Gen ``annotation.json`` path (or the loaded object); ``image_root`` resolves its images.
        output_dir: where predictions.jsonl, metrics.json, report.md, examples/ and figures/ go (default
            ``<model_dir>/evaluation-<split>``).
        num_beams, max_new_tokens: override the model's generation_config.
        num_examples: studies shown in the Markdown report.
        generator: an already loaded :class:`cxrgen.inference.ReportGenerator` for ``model_dir`` (saves a reload).
        allow_pickle: load pickle weights (``pytorch_model.bin``) when the folder has no safetensors.
        skip_image_check: do not decode-check the split's images before generating (see :func:`load_split`).
        meteor: a :class:`cxrgen.evaluation.metrics.MeteorScorer` shared with other evaluations (left open).

    Returns:
        ``{"metrics": evaluate_reports result plus "predictions": truncation_summary, "records": prediction records
        (with a "truncated" flag each), "paths": {name: Path}}``.
    """
    output_dir = Path(output_dir) if output_dir is not None else Path(model_dir) / f"evaluation-{split}"
    dataset = load_split(annotation, image_root, split, skip_image_check=skip_image_check)
    if generator is None:
        generator = load_generator(model_dir, allow_pickle=allow_pickle)
    studies = study_paths(dataset)
    started = time.perf_counter()
    generated = generate_reports(
        generator, studies, batch_size=batch_size, num_beams=num_beams, max_new_tokens=max_new_tokens
    )
    generation_seconds = time.perf_counter() - started
    references = reference_reports(generator.processor, dataset["report"])
    predictions = [result["report"] for result in generated]
    truncated = truncated_predictions(
        generator.processor, predictions, generation_budget(generator.model, max_new_tokens)
    )
    records = [
        {"id": study_id, "prediction": prediction, "reference": reference, "images": paths, "truncated": cut}
        | {key: value for key, value in result.items() if key != "report"}
        for study_id, prediction, result, reference, paths, cut in zip(
            dataset["id"], predictions, generated, references, studies, truncated
        )
    ]
    metrics = evaluate_reports(predictions, references, meteor=meteor) | {"predictions": truncation_summary(records)}
    settings = {
        "model": str(model_dir),
        "method": generator.method,
        "split": split,
        "num_studies": len(records),
        "generation": {**generator.model.generation_config.to_diff_dict(), **_overrides(num_beams, max_new_tokens)},
        "generation_seconds": round(generation_seconds, 2),
    }

    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "predictions": write_predictions(records, output_dir / PREDICTIONS_NAME),
        "metrics": output_dir / METRICS_NAME,
        "report": output_dir / REPORT_NAME,
    }
    paths["metrics"].write_text(json.dumps({**metrics, "settings": settings}, indent=2), encoding="utf-8")
    examples = write_examples(records[:num_examples], output_dir, generator)
    paths["report"].write_text(
        markdown_report(
            metrics, examples, title=f"Evaluation of {Path(model_dir).name} on the {split} split", settings=settings
        ),
        encoding="utf-8",
    )
    return {"metrics": metrics, "records": records, "paths": paths}


def _overrides(num_beams, max_new_tokens):
    return {
        key: value
        for key, value in (("num_beams", num_beams), ("max_new_tokens", max_new_tokens))
        if value is not None
    }


def write_examples(
    records: list[dict], output_dir: str | os.PathLike, generator: ReportGenerator | None = None
) -> list[dict]:
    """Save thumbnails of each record's images under ``output_dir/examples``; return the records with their paths.

    With the ``generator`` that wrote the records, their figures (:func:`cxrgen.visualization.study_figures`) go
    under ``output_dir/figures``, listed in each returned record's ``figures`` as (relative path, caption) pairs.
    """
    examples = []
    folder = Path(output_dir) / EXAMPLES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for record in records:
        figures = []
        if generator is not None:
            (Path(output_dir) / FIGURES_DIR).mkdir(exist_ok=True)
            for index, (figure, caption) in enumerate(study_figures(generator, record["images"], record)):
                name = f"{FIGURES_DIR}/{_safe_name(record['id'])}_{index}.png"
                figure.save(Path(output_dir) / name)
                figures.append((name, caption))
        thumbnails = []
        for index, path in enumerate(record["images"]):
            # The model's own reader, so the thumbnail shows what the model saw (orientation, 16-bit scaling).
            thumbnail = load_image(path).convert("L")
            thumbnail.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
            name = f"{_safe_name(record['id'])}_{index}.png"
            thumbnail.save(folder / name)
            thumbnails.append(f"{EXAMPLES_DIR}/{name}")
        examples.append({**record, "thumbnails": thumbnails, "figures": figures})
    return examples


def _safe_name(study_id):
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in study_id)


def markdown_metrics_table(results: dict) -> str:
    """A Markdown table of NLG and CE (micro, macro, example-based P/R/F1) scores, one column per system.

    ``results`` maps a system name to an :func:`cxrgen.evaluation.metrics.evaluate_reports` result.
    """
    names = list(results)
    lines = ["| Metric | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for metric in NLG_METRICS:
        values = [results[name]["nlg"][metric] for name in names]
        lines.append(f"| {metric} | " + " | ".join("n/a" if v is None else f"{v:.4f}" for v in values) + " |")
    for average in CE_AVERAGES:
        for score, short in (("precision", "P"), ("recall", "R"), ("f1", "F1")):
            values = [results[name]["ce"][average][score] for name in names]
            lines.append(f"| CE {average} {short} | " + " | ".join(f"{v:.4f}" for v in values) + " |")
    return "\n".join(lines)


def markdown_per_observation_table(result: dict) -> str:
    """A Markdown table of per-observation CE precision, recall, F1 and reference support."""
    lines = ["| Observation | P | R | F1 | Support |", "|---|---:|---:|---:|---:|"]
    for name, scores in result["ce"]["per_observation"].items():
        lines.append(
            f"| {name} | {scores['precision']:.4f} | {scores['recall']:.4f} | {scores['f1']:.4f} | {scores['support']} |"
        )
    return "\n".join(lines)


def markdown_report(metrics: dict, examples: list[dict], title: str, settings: dict | None = None) -> str:
    """The human report of an evaluation: metric tables, then each example's thumbnails, reference and prediction."""
    lines = [f"# {title}", ""]
    lines += [
        "Research use only: these scores measure word overlap and labeler agreement with the references, not "
        "clinical safety.",
        "",
    ]
    if settings:
        lines += ["```json", json.dumps(settings, indent=2), "```", ""]
    lines += ["## Metrics", "", markdown_metrics_table({"model": metrics}), ""]
    for name, reason in metrics["nlg"]["unavailable"].items():
        lines += [f"{name} unavailable: {reason}", ""]
    note = truncation_note(metrics)
    if note:
        lines += [note, ""]
    lines += [
        f"## Clinical efficacy per observation ({metrics['ce']['num_reports']} reports, positive vs rest)",
        "",
        markdown_per_observation_table(metrics),
        "",
        "## Examples",
        "",
    ]
    for example in examples:
        images = " ".join(f"![{example['id']} view {i}]({path})" for i, path in enumerate(example["thumbnails"]))
        lines += [f"### {example['id']}", "", images, "", f"**Reference:** {example['reference']}", ""]
        lines += [f"**Generated:** {example['prediction']}", ""]
        if "clues" in example:
            clues = ", ".join(
                f"{c['observation']} ({c['polarity']}, {c['probability']:.2f})" for c in example["clues"]
            )
            lines += [f"**Clues used:** {clues or 'none'}", ""]
        for path, caption in example.get("figures", []):
            lines += [f"![{caption}]({path})", "", f"*{caption}*", ""]
    return "\n".join(lines)
