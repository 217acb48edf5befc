"""An evaluation run of a saved model on one split: predictions (JSONL), metrics (JSON) and a Markdown report.

The Markdown report holds the metric table (NLG and clinical efficacy), the per-observation CE table and a few
example studies with thumbnails of their images, the reference and the generated report, and the figures of
:mod:`cxrgen.visualization` (CMCRL: attention rollout overlays; TRRG: the probability chart with its clues).

References are the annotation's reports cleaned as the model's processor cleans its training targets (CMCRL's
``cleaning_style``), so predictions and references are compared in the same form; a processor without a cleaning
style (TRRG) is compared with the reports as written in the annotation.
"""

import json
import time
from pathlib import Path

import datasets
from PIL import Image

from cxrgen.data.annotation import annotation_to_dataset_dict, read_annotation
from cxrgen.evaluation.metrics import CE_AVERAGES, NLG_METRICS, evaluate_reports
from cxrgen.evaluation.predictions import write_predictions
from cxrgen.inference import generate_reports, load_generator
from cxrgen.processing.cleaning import clean_report
from cxrgen.visualization import study_figures

PREDICTIONS_NAME = "predictions.jsonl"
METRICS_NAME = "metrics.json"
REPORT_NAME = "report.md"
EXAMPLES_DIR = "examples"
FIGURES_DIR = "figures"
THUMBNAIL_SIZE = 160


def load_split(annotation_or_path, image_root, split):
    """One split of an annotation as a ``datasets.Dataset`` whose ``images`` column holds file paths (not decoded)."""
    annotation = annotation_or_path if isinstance(annotation_or_path, dict) else read_annotation(annotation_or_path)
    if split not in annotation:
        raise ValueError(f"The annotation has no '{split}' split (it has {sorted(annotation)}).")
    if not annotation[split]:
        raise ValueError(f"The annotation's '{split}' split is empty: nothing to evaluate.")
    dataset = annotation_to_dataset_dict({split: annotation[split]}, image_root)[split]
    return dataset.cast_column("images", datasets.List(datasets.Image(decode=False)))


def study_paths(dataset):
    """The image file paths of every study of a :func:`load_split` dataset, views in annotation order."""
    return [[view["path"] for view in views] for views in dataset["images"]]


def reference_reports(processor, reports):
    """Reports in the form the model was trained to write (see the module docstring)."""
    style = getattr(processor, "cleaning_style", None)
    return list(reports) if style is None else [clean_report(report, style) for report in reports]


def evaluate_model(
    model_dir,
    annotation,
    image_root,
    split="test",
    output_dir=None,
    batch_size=16,
    num_beams=None,
    max_new_tokens=None,
    num_examples=3,
    generator=None,
):
    """Generate reports for every study of ``split``, score them and write the evaluation files.

    Args:
        model_dir: a saved CMCRL or TRRG model folder.
        annotation: an R2Gen ``annotation.json`` path (or the loaded object); ``image_root`` resolves its images.
        output_dir: where predictions.jsonl, metrics.json, report.md, examples/ and figures/ go (default
            ``<model_dir>/evaluation-<split>``).
        num_beams, max_new_tokens: override the model's generation_config.
        num_examples: studies shown in the Markdown report.
        generator: an already loaded :class:`cxrgen.inference.ReportGenerator` for ``model_dir`` (saves a reload).

    Returns:
        ``{"metrics": evaluate_reports result, "records": prediction records, "paths": {name: Path}}``.
    """
    output_dir = Path(output_dir) if output_dir is not None else Path(model_dir) / f"evaluation-{split}"
    dataset = load_split(annotation, image_root, split)
    if generator is None:
        generator = load_generator(model_dir)
    studies = study_paths(dataset)
    started = time.perf_counter()
    generated = generate_reports(
        generator, studies, batch_size=batch_size, num_beams=num_beams, max_new_tokens=max_new_tokens
    )
    generation_seconds = time.perf_counter() - started
    references = reference_reports(generator.processor, dataset["report"])
    records = [
        {"id": study_id, "prediction": result["report"], "reference": reference, "images": paths}
        | {key: value for key, value in result.items() if key != "report"}
        for study_id, result, reference, paths in zip(dataset["id"], generated, references, studies)
    ]
    metrics = evaluate_reports([r["prediction"] for r in records], references)
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


def write_examples(records, output_dir, generator=None):
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
            with Image.open(path) as image:
                thumbnail = image.convert("L")
                thumbnail.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
            name = f"{_safe_name(record['id'])}_{index}.png"
            thumbnail.save(folder / name)
            thumbnails.append(f"{EXAMPLES_DIR}/{name}")
        examples.append({**record, "thumbnails": thumbnails, "figures": figures})
    return examples


def _safe_name(study_id):
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in study_id)


def markdown_metrics_table(results):
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


def markdown_per_observation_table(result):
    """A Markdown table of per-observation CE precision, recall, F1 and reference support."""
    lines = ["| Observation | P | R | F1 | Support |", "|---|---:|---:|---:|---:|"]
    for name, scores in result["ce"]["per_observation"].items():
        lines.append(
            f"| {name} | {scores['precision']:.4f} | {scores['recall']:.4f} | {scores['f1']:.4f} | {scores['support']} |"
        )
    return "\n".join(lines)


def markdown_report(metrics, examples, title, settings=None):
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
