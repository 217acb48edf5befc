"""Model cards for cxrgen models: Hub metadata with a model-index, and a body written for a medical research model."""

import json
import math
import numbers
import os
import re
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from transformers import PreTrainedConfig

from cxrgen.methods import METHODS
from cxrgen.modeling import read_model_config

TEMPLATE_PATH = Path(__file__).with_name("model_card_template.md")
BASE_TAGS = ("radiology-report-generation", "chest-x-ray", "medical", "custom_code")
# The kinds of folder a card describes: a report generator (the models users load), or the vision backbone that
# CMCRL's backbone stage trains as an observation classifier, an intermediate folder for `cxrgen train vlci --init`.
REPORT_GENERATOR, VISION_BACKBONE = "report-generator", "vision-backbone"
BACKBONE_TEMPLATE_PATH = Path(__file__).with_name("backbone_card_template.md")
BACKBONE_TAGS = ("chest-x-ray", "medical", "cxrgen", "vision-backbone")

# Hub metric ids for the metrics cxrgen reports; any other name is slugified.
_METRIC_TYPE_PATTERNS = (
    (r"bleu", "bleu"),
    (r"meteor", "meteor"),
    (r"rouge", "rouge"),
    (r"cider", "cider"),
    (r"f1", "f1"),
    (r"precision|(^|[^a-z])p($|[^a-z])", "precision"),
    (r"recall|(^|[^a-z])r($|[^a-z])", "recall"),
)


def build_model_card(
    model_folder_or_config: str | os.PathLike | dict | PreTrainedConfig,
    *,
    model_name: str,
    repo_id: str,
    method: str,
    metrics: dict[str, float] | None,
    dataset_name: str,
    dataset_id: str,
    dataset_split: str,
    metrics_source_description: str | None,
    is_phantom_data: bool,
    training_setup: dict | str,
    base_model: str | None = None,
    initialization: str | None = None,
    has_processor: bool | None = None,
    license: str = "apache-2.0",
    kind: str = REPORT_GENERATOR,
) -> ModelCard:
    """Build the Hub model card of a saved cxrgen model folder (or of its config).

    `metrics` maps metric names to values (or is None for an unevaluated model); each becomes a model-index result on
    `dataset_id`/`dataset_split`. `has_processor` is read from the folder (processor_config.json) and must be given
    when a config is passed instead.

    `kind` is what the folder holds: `REPORT_GENERATOR` (the default), or `VISION_BACKBONE`, the observation
    classifier of CMCRL's backbone stage, whose card lists its metrics (`metrics_source_description` says how they
    were computed) and setup without a model-index, usage snippet or license.
    """
    if kind not in (REPORT_GENERATOR, VISION_BACKBONE):
        raise ValueError(f"kind must be {REPORT_GENERATOR!r} or {VISION_BACKBONE!r}, got {kind!r}.")
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}.")
    for field, value in (
        ("model_name", model_name),
        ("repo_id", repo_id),
        ("dataset_name", dataset_name),
        ("dataset_id", dataset_id),
        ("dataset_split", dataset_split),
    ):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{field} must be a non-empty string, got {value!r}.")
    if not isinstance(is_phantom_data, bool):
        raise TypeError(f"is_phantom_data must be True or False, got {is_phantom_data!r}.")

    metric_values = _check_metrics(metrics)
    if metric_values and not (isinstance(metrics_source_description, str) and metrics_source_description.strip()):
        raise ValueError("metrics_source_description must say how the metrics were computed when metrics are given.")
    method_info = METHODS[method]
    if kind == VISION_BACKBONE:
        card_data = ModelCardData(
            library_name="transformers",
            pipeline_tag="image-classification",
            tags=list(BACKBONE_TAGS),
            datasets=[dataset_id],
            base_model=base_model,
        )
        return ModelCard.from_template(
            card_data,
            template_path=str(BACKBONE_TEMPLATE_PATH),
            model_name=model_name,
            method_name=method_info.display_name,
            dataset_name=dataset_name,
            is_phantom_data=is_phantom_data,
            metric_rows=[(name, f"{value:.4f}") for name, value in metric_values.items()],
            metrics_source_description=metrics_source_description,
            training_setup=training_setup,
        )

    config, source = _read_config(model_folder_or_config)
    if has_processor is None:
        if source is None:
            raise ValueError("has_processor must be given when a config is passed instead of a model folder.")
        has_processor = (Path(source) / "processor_config.json").is_file()
    model_type, architecture = _model_identity(config, source)
    has_pipeline = "image-to-text" in (config.get("custom_pipelines") or {})

    card_data = ModelCardData(
        language="en",
        license=license,
        library_name="transformers",
        pipeline_tag="image-to-text",
        tags=[*BASE_TAGS, method],
        datasets=[dataset_id],
        base_model=base_model,
        model_name=model_name,
        eval_results=[
            EvalResult(
                task_type="image-to-text",
                task_name="Radiology Report Generation",
                dataset_type=dataset_id,
                dataset_name=dataset_name,
                dataset_split=dataset_split,
                metric_type=_metric_type(name),
                metric_name=name,
                metric_value=value,
            )
            for name, value in metric_values.items()
        ]
        or None,
    )
    snippet_imports = ", ".join(
        ["AutoModel"] + (["AutoProcessor"] if has_processor else []) + (["pipeline"] if has_pipeline else [])
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        model_name=model_name,
        repo_id=repo_id,
        method_name=method_info.display_name,
        method_paper_title=method_info.card.title,
        method_summary=method_info.card.summary,
        citation=method_info.card.citation,
        model_type=model_type,
        architecture=architecture,
        base_model=base_model,
        initialization=initialization,
        dataset_name=dataset_name,
        dataset_id=dataset_id,
        dataset_split=dataset_split,
        is_phantom_data=is_phantom_data,
        metric_rows=[(_table_cell(name), f"{value:.4f}") for name, value in metric_values.items()],
        metrics_source_description=metrics_source_description,
        training_setup_markdown=_training_setup_markdown(training_setup),
        has_processor=has_processor,
        has_pipeline=has_pipeline,
        snippet_imports=snippet_imports,
    )


def save_model_card(card: ModelCard, folder: str | os.PathLike) -> Path:
    """Write `card` as the README.md of an existing model folder and return the file's path.

    The card is written to a temporary name, then renamed: a training checkpoint counts as complete once its card is
    there (:func:`cxrgen.trainers.arguments.checkpoint_problem`), so a kill must never leave half of one."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Model folder not found: {folder}")
    path = folder / "README.md"
    partial = folder / ".README.md.partial"
    card.save(partial)
    os.replace(partial, path)
    return path


def card_base_model(folder: str | os.PathLike) -> str | None:
    """The ``base_model`` of the card (README.md metadata) of a model folder; None without a card or one."""
    path = Path(folder) / "README.md"
    if not path.is_file():
        return None
    base_model = ModelCard.load(path).data.base_model
    return base_model if isinstance(base_model, str) else None


def _read_config(model_folder_or_config):
    """Return (config dict, folder or None) from a model folder, a PreTrainedConfig or a config dict."""
    if isinstance(model_folder_or_config, (str, os.PathLike)):
        return read_model_config(model_folder_or_config), Path(model_folder_or_config)
    if isinstance(model_folder_or_config, dict):
        return model_folder_or_config, None
    if hasattr(model_folder_or_config, "to_dict"):
        return model_folder_or_config.to_dict(), None
    raise TypeError(
        "model_folder_or_config must be a model folder path, a PreTrainedConfig or a config dict, "
        f"got {type(model_folder_or_config).__name__}."
    )


def _model_identity(config, source):
    """Return (model_type, architecture), checking the config loads through AutoModel with remote code."""
    where = f"{Path(source) / 'config.json'}" if source is not None else "the config"
    model_type = config.get("model_type")
    architectures = config.get("architectures")
    if not model_type:
        raise ValueError(f"{where} has no model_type.")
    if not architectures:
        raise ValueError(f"{where} has no architectures: build the card from a saved model folder.")
    if "AutoModel" not in (config.get("auto_map") or {}):
        raise ValueError(
            f"{where} has no auto_map entry for AutoModel, so the card's trust_remote_code usage would fail: save "
            "the model after register_for_auto_class so its remote code is written with it."
        )
    return model_type, architectures[0]


def _check_metrics(metrics):
    """Return the metrics as {name: float}, refusing names or values that are not usable in a model-index."""
    if metrics is None:
        return {}
    if not isinstance(metrics, dict):
        raise TypeError(f"metrics must be a dict of metric name -> value or None, got {type(metrics).__name__}.")
    checked = {}
    for name, value in metrics.items():
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"Metric names must be non-empty strings, got {name!r}.")
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"Metric {name!r} must be a finite number, got {value!r}.")
        checked[name] = float(value)
    return checked


def _metric_type(name):
    """Map a metric name (e.g. "BLEU-4", "CE macro F1") to a Hub metric id."""
    lowered = name.lower()
    for pattern, metric_type in _METRIC_TYPE_PATTERNS:
        if re.search(pattern, lowered):
            return metric_type
    return re.sub(r"[^a-z0-9]+", "_", lowered).strip("_")


def _training_setup_markdown(training_setup):
    """Render the training setup: a dict becomes a two-column table, a string is used as written."""
    if isinstance(training_setup, str) and training_setup.strip():
        return training_setup.strip()
    if isinstance(training_setup, dict) and training_setup:
        rows = ["| Setting | Value |", "|---|---|"]
        for key, value in training_setup.items():
            shown = value if isinstance(value, (str, numbers.Number)) else json.dumps(value)
            rows.append(f"| {_table_cell(key)} | {_table_cell(shown)} |")
        return "\n".join(rows)
    raise ValueError(f"training_setup must be a non-empty dict or string, got {training_setup!r}.")


def _table_cell(value):
    """Keep a value inside one markdown table cell."""
    return str(value).replace("|", "\\|").replace("\n", " ")
