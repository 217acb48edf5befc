"""Shared parts of the training stages: stage registry, stage configs, data, processors, Trainer arguments, metrics
and the callback that keeps every checkpoint a complete model folder.

Stage entry point
-----------------
Every stage module named in :data:`STAGES` exposes::

    run(config, data, images, output, resume=False, init=None, trainer_args=()) -> pathlib.Path

- ``config``: a preset name, a YAML file (schema below) or an already loaded dict of that schema;
- ``data``: an R2Gen ``annotation.json``; ``images``: the root its image paths are relative to;
- ``output``: the run folder; it receives the ``checkpoint-<step>`` folders and, at the end, the final model;
- ``resume``: continue from the latest ``checkpoint-<step>`` in ``output`` (same config, data and arguments);
- ``init``: a model folder of the previous stage to start from (RadCARE or a backbone folder for VLCI, TRRG stage 1
  for TRRG);
- ``trainer_args``: Trainer arguments as command-line strings, e.g. ``["--learning_rate", "1e-4",
  "--report_to", "tensorboard"]`` (see :func:`build_training_args`).

It returns ``output``, which then holds a complete model folder: safetensors weights, config with ``auto_map`` and
``custom_pipelines``, the remote code, the processor and a model card (README.md). ``cxrgen train <stage>`` calls it.

YAML config schema
------------------
Every top-level key is optional; unknown keys are an error::

    preset: tiny            # a preset of the stage's method: a name of cxrgen.presets.list_presets() or a file path
    model: {...}            # model config overrides, e.g. {hidden_size: 64, dropout: 0.2}
    processor: {...}        # how a new processor is built: CMCRL {min_frequency: 3, cleaning_style: iu}
    data: {...}             # data options: CMCRL {augment: true}; VLCI also {balance_power: 0}
    training: {...}         # TrainingArguments fields (Seq2SeqTrainingArguments for generation stages)
    card: {...}             # model card: model_name, repo_id, dataset_name, dataset_id, phantom_data

Trainer arguments are merged as: stage defaults < YAML ``training`` < ``trainer_args``. YAML values pass through the
same parser as command-line values, so ``learning_rate: 1e-4`` (a string to YAML) becomes a float.
"""

import argparse
import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from transformers import HfArgumentParser, TrainerCallback, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from cxrgen.data.annotation import read_annotation
from cxrgen.methods import METHODS, find_stage, resolve

logger = logging.getLogger(__name__)

# Stage name -> module exposing `run`, as the method registry (cxrgen.methods) names them.
STAGES = {stage.name: stage.module for method in METHODS.values() for stage in method.stages}
CONFIG_SECTIONS = ("preset", "model", "processor", "data", "training", "card")
CARD_KEYS = ("model_name", "repo_id", "dataset_name", "dataset_id", "phantom_data")

# compute_metrics keys (the Trainer logs them as eval_<key>) -> names in the model card.
METRIC_NAMES = {
    "bleu_1": "BLEU-1",
    "bleu_2": "BLEU-2",
    "bleu_3": "BLEU-3",
    "bleu_4": "BLEU-4",
    "meteor": "METEOR",
    "rouge_l": "ROUGE-L",
    "cider": "CIDEr",
    **{
        f"ce_{average}_{score}": f"CE {average} {score if score != 'f1' else 'F1'}"
        for average in ("micro", "macro", "example")
        for score in ("precision", "recall", "f1")
    },
}


def get_stage(name):
    """The ``run`` function of a stage of :data:`STAGES`."""
    _, stage = find_stage(name)
    try:
        return resolve(stage.trainer)
    except ModuleNotFoundError as error:
        if error.name != stage.module:
            raise
        raise ValueError(
            f"Training stage {name!r} is not available in this installation ({stage.module} is missing)."
        ) from error


# ----------------------------------------------------------------------------------------------------------------
# Stage configs
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class StageConfig:
    """A loaded stage config (see the module docstring for the schema); ``source`` names where it came from."""

    source: str
    preset: str | None = None
    model: dict = field(default_factory=dict)
    processor: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    card: dict = field(default_factory=dict)

    def section(self, name, allowed):
        """A section's dict after checking its keys against ``allowed``."""
        values = getattr(self, name)
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            raise ValueError(
                f"{self.source}: unknown key(s) {unknown} in '{name}'; expected some of {sorted(allowed)}."
            )
        return values


def load_stage_config(config):
    """Load a stage config from a preset name, a YAML file (``.yaml``/``.yml`` or an existing file) or a dict."""
    if isinstance(config, StageConfig):
        return config
    if isinstance(config, dict):
        values, source = config, "config"
    elif isinstance(config, (str, os.PathLike)) and (
        Path(config).is_file() or str(config).endswith((".yaml", ".yml"))
    ):
        path = Path(config)
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as error:
            raise ValueError(f"{path}: cannot read the config file ({error}).") from error
        except yaml.YAMLError as error:
            raise ValueError(f"{path}: invalid YAML ({error}).") from error
        values, source = ({} if values is None else values), str(path)
    elif isinstance(config, str) and config:
        return StageConfig(source=f"preset {config!r}", preset=config)
    else:
        raise ValueError(f"config must be a preset name, a YAML file or a dict, got {config!r}.")
    if not isinstance(values, dict):
        raise ValueError(
            f"{source}: expected a mapping with keys among {list(CONFIG_SECTIONS)}, got {type(values).__name__}."
        )
    unknown = sorted(set(values) - set(CONFIG_SECTIONS))
    if unknown:
        raise ValueError(f"{source}: unknown top-level key(s) {unknown}; expected some of {list(CONFIG_SECTIONS)}.")
    preset = values.get("preset")
    if preset is not None and not (isinstance(preset, str) and preset):
        raise ValueError(f"{source}: 'preset' must be a preset name, got {preset!r}.")
    sections = {}
    for name in CONFIG_SECTIONS[1:]:
        section = values.get(name) or {}
        if not isinstance(section, dict):
            raise ValueError(f"{source}: '{name}' must be a mapping, got {type(section).__name__}.")
        sections[name] = dict(section)
    return StageConfig(source=source, preset=preset, **sections)


# ----------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------
def load_split(annotation, image_root, split, required=True):
    """One split of an annotation (object or path) as a ``datasets.Dataset`` with decoded ``images``.

    Returns None for a missing or empty split unless ``required``, in which case that is an error.
    """
    from cxrgen.data.annotation import annotation_to_dataset_dict

    if not isinstance(annotation, dict):
        annotation = read_annotation(annotation)
    if not annotation.get(split):
        if required:
            raise ValueError(
                f"The annotation has no '{split}' studies (splits: "
                f"{ {name: len(entries) for name, entries in annotation.items()} }); training needs them."
            )
        return None
    return annotation_to_dataset_dict({split: annotation[split]}, image_root)[split]


def is_phantom_annotation(annotation):
    """Whether an annotation was written by :func:`cxrgen.data.phantom_benchmark.build_phantom_benchmark`: every
    study's images are its numbered phantom views ``<id>/0.png``, ``<id>/1.png``, ..."""
    entries = [entry for split in annotation.values() for entry in split]
    return bool(entries) and all(
        entry["image_path"] == [f"{entry['id']}/{index}.png" for index in range(len(entry["image_path"]))]
        for entry in entries
    )


def build_cmcrl_processor(train_reports, image_size, max_length, min_frequency=3, cleaning_style="iu"):
    """A ``CmcrlProcessor`` whose word-level tokenizer is built from the cleaned training reports (R2Gen protocol:
    words seen fewer than ``min_frequency`` times become [UNK]); images are resized to ``image_size``."""
    from cxrgen.processing.cleaning import clean_report
    from cxrgen.processing.image_processing_cxr import CxrImageProcessor
    from cxrgen.processing.processing_cmcrl import CmcrlProcessor
    from cxrgen.processing.tokenization import build_report_tokenizer

    tokenizer = build_report_tokenizer(
        [clean_report(report, cleaning_style) for report in train_reports],
        min_frequency=min_frequency,
        model_max_length=max_length,
    )
    image_processor = CxrImageProcessor(size={"height": image_size, "width": image_size})
    return CmcrlProcessor(image_processor, tokenizer, cleaning_style=cleaning_style)


def cmcrl_config_and_processor(stage_config, default_preset, train_reports, processor_folder=None):
    """The ``CmcrlConfig`` (preset + YAML ``model`` overrides, ``vocab_size`` from the tokenizer) and the
    ``CmcrlProcessor`` of a CMCRL run: loaded from ``processor_folder`` (a checkpoint to resume, a RadCARE folder to
    start from) or built from ``train_reports`` with the YAML ``processor`` options."""
    from cxrgen.modeling.cmcrl import CmcrlConfig
    from cxrgen.processing.processing_cmcrl import CmcrlProcessor

    overrides = dict(stage_config.model)
    if "vocab_size" in overrides:
        raise ValueError(f"{stage_config.source}: model.vocab_size is set from the report tokenizer; remove it.")
    options = stage_config.section("processor", ("min_frequency", "cleaning_style"))
    config = CmcrlConfig.from_preset(stage_config.preset or default_preset, **overrides)
    if processor_folder is not None:
        if options:
            logger.warning(
                "The processor comes from %s; the config's 'processor' options are not used.", processor_folder
            )
        processor = load_processor(processor_folder, CmcrlProcessor)
        size = processor.image_processor.size
        if (size["height"], size["width"]) != (config.image_size, config.image_size):
            raise ValueError(
                f"{processor_folder}: its processor resizes images to {size['height']}x{size['width']}, "
                f"the model config expects {config.image_size}x{config.image_size}."
            )
    else:
        processor = build_cmcrl_processor(train_reports, config.image_size, config.max_report_length, **options)
    config.vocab_size = len(processor.tokenizer)
    return config, processor


def data_options(stage_config, balance=False):
    """The YAML ``data`` options of the CMCRL stages: ``augment`` (default true) applies the image processor's
    train-time augmentation (random crop and flip, deterministic per batch) to the training data only; with
    ``balance`` (stages that sample studies), ``balance_power`` (default 0: off) samples training studies by the
    rarity of their positive observations (:func:`cxrgen.data.sampling.observation_balance_weights`)."""
    allowed = ("augment", "balance_power") if balance else ("augment",)
    options = {"augment": True, "balance_power": 0.0, **stage_config.section("data", allowed)}
    if not isinstance(options["augment"], bool):
        raise ValueError(f"{stage_config.source}: data.augment must be true or false, got {options['augment']!r}.")
    power = options["balance_power"]
    if isinstance(power, bool) or not isinstance(power, (int, float)) or power < 0:
        raise ValueError(f"{stage_config.source}: data.balance_power must be a number >= 0, got {power!r}.")
    return options


def load_processor(folder, expected_class=None):
    """The processor saved in a model folder (``processor_config.json``), optionally checked to be of a class."""
    from transformers import AutoProcessor

    folder = Path(folder)
    if not (folder / "processor_config.json").is_file():
        raise ValueError(f"{folder} has no processor_config.json: expected a model folder saved by a cxrgen stage.")
    processor = AutoProcessor.from_pretrained(folder)
    if expected_class is not None and not isinstance(processor, expected_class):
        raise ValueError(f"{folder}: expected a {expected_class.__name__}, found a {type(processor).__name__}.")
    return processor


# ----------------------------------------------------------------------------------------------------------------
# Run folders and Trainer arguments
# ----------------------------------------------------------------------------------------------------------------
def resume_checkpoint(output, resume):
    """The checkpoint to resume from (``resume=True``: the latest in ``output``), or None for a fresh run.

    A fresh run refuses an ``output`` that already has checkpoints, so nothing of an earlier run is mixed in."""
    output = Path(output)
    latest = get_last_checkpoint(str(output)) if output.is_dir() else None
    if resume:
        if latest is None:
            raise ValueError(f"--resume: {output} has no {PREFIX_CHECKPOINT_DIR}-<step> folder to resume from.")
        logger.info("Resuming from %s", latest)
        return latest
    if latest is not None:
        raise ValueError(
            f"{output} already holds checkpoints ({Path(latest).name}); pass --resume to continue that run "
            "or choose another output folder."
        )
    return None


def _argv(values):
    """YAML values that the argument parser can read, as command-line tokens; the rest (mappings, None) as is."""
    argv, direct = [], {}
    for key, value in values.items():
        if isinstance(value, (str, int, float, bool)):
            argv += [f"--{key}", str(value)]
        elif isinstance(value, list) and value and all(isinstance(item, (str, int, float, bool)) for item in value):
            argv += [f"--{key}", *map(str, value)]
        else:
            direct[key] = value
    return argv, direct


def build_training_args(
    output_dir, defaults, overrides=None, cli_args=(), args_class=TrainingArguments, source="config"
):
    """``args_class`` (TrainingArguments or a subclass) from stage ``defaults`` < ``overrides`` (the YAML
    ``training`` section, named ``source`` in errors) < ``cli_args`` (command-line strings such as
    ``["--learning_rate", "1e-4"]``). ``output_dir`` is the run folder and cannot be overridden."""
    names = {f.name for f in dataclasses.fields(args_class) if f.init}
    parser = HfArgumentParser(args_class, exit_on_error=False)
    # Only arguments that are actually given may override the stage defaults: the others keep this marker.
    unset = object()
    parser.set_defaults(**{name: unset for name in names})

    def parse(argv, where):
        try:
            namespace, unknown = parser.parse_known_args(list(argv))
        except argparse.ArgumentError as error:
            raise ValueError(f"{where}: {error}") from error
        if unknown:
            raise ValueError(
                f"{where}: unknown Trainer argument(s) {unknown} (see transformers.{args_class.__name__})."
            )
        return {name: value for name, value in vars(namespace).items() if value is not unset}

    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {unknown} in 'training' (expected {args_class.__name__} fields).")
    yaml_argv, direct = _argv(overrides)
    values = {**defaults, **direct, **parse(yaml_argv, f"{source} 'training'"), **parse(cli_args, "Trainer arguments")}
    if "output_dir" in values and Path(values["output_dir"]) != Path(output_dir):
        raise ValueError(
            "output_dir is the stage's --output folder; do not set it in the config or Trainer arguments."
        )
    values["output_dir"] = str(output_dir)
    return args_class(**values)


# ----------------------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------------------
def flatten_metrics(result):
    """An ``evaluate_reports`` result as flat ``{key: value}`` with the keys of :data:`METRIC_NAMES`; metrics that
    could not be computed (METEOR without Java) are left out with a warning saying why."""
    nlg, ce = result["nlg"], result["ce"]
    flat = {}
    for key, name in METRIC_NAMES.items():
        if key.startswith("ce_"):
            _, average, score = key.split("_")
            flat[key] = ce[average][score]
        elif nlg[name] is not None:
            flat[key] = nlg[name]
    for name, reason in nlg["unavailable"].items():
        logger.warning("%s not computed: %s", name, reason)
    return flat


def report_metrics(processor, references):
    """A ``compute_metrics`` for generation-based evaluation: decodes the generated ids of every evaluated study with
    ``processor.post_process_generation`` and scores them with ``cxrgen.evaluation.metrics.evaluate_reports``
    against ``references`` (the evaluation split's whole reports, in dataset order; never the truncated labels).

    The Trainer evaluates in dataset order (also across processes, where it gathers and drops the padding), so
    prediction i belongs to reference i."""
    from cxrgen.evaluation.metrics import evaluate_reports

    references = list(references)

    def compute_metrics(eval_prediction):
        predictions = eval_prediction.predictions
        if isinstance(predictions, tuple):
            predictions = predictions[0]
        if len(predictions) != len(references):
            raise ValueError(
                f"compute_metrics got {len(predictions)} generated reports for {len(references)} "
                "evaluation studies: the evaluation data must be the dataset the metrics were built for."
            )
        return flatten_metrics(evaluate_reports(processor.post_process_generation(predictions), references))

    return compute_metrics


def check_best_metric(args):
    """Refuse a ``metric_for_best_model`` that evaluation will not produce (before any training time is spent)."""
    metric = args.metric_for_best_model
    if metric is None:
        return
    key = metric[len("eval_") :] if metric.startswith("eval_") else metric
    if key != "loss" and key not in METRIC_NAMES:
        raise ValueError(f"metric_for_best_model={metric!r}: expected 'loss' or one of {list(METRIC_NAMES)}.")


# ----------------------------------------------------------------------------------------------------------------
# Model folders
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class CardInfo:
    """What the model card of a stage's folders says besides the metrics (see ``build_model_card``)."""

    method: str
    model_name: str
    repo_id: str
    dataset_name: str
    dataset_id: str
    is_phantom_data: bool
    training_setup: dict
    initialization: str | None = None
    metrics_split: str = "val"
    metrics_source_description: str | None = None


def card_info(
    stage_config,
    annotation,
    data,
    output,
    method,
    stage,
    training_setup,
    initialization=None,
    metrics_source_description=None,
):
    """The :class:`CardInfo` of a run: YAML ``card`` values, else defaults from the data and the output folder."""
    card = stage_config.section("card", CARD_KEYS)
    detected = is_phantom_annotation(annotation)
    phantom = card.get("phantom_data", detected)
    if not isinstance(phantom, bool):
        raise ValueError(f"{stage_config.source}: card.phantom_data must be true or false, got {phantom!r}.")
    if phantom != detected:
        logger.warning(
            "card.phantom_data=%s although the annotation %s like a phantom benchmark.",
            phantom,
            "looks" if detected else "does not look",
        )
    default_dataset = "cxrgen-phantom" if phantom else Path(data).resolve().parent.name or "dataset"
    name = Path(output).resolve().name
    return CardInfo(
        method=method,
        model_name=card.get("model_name", f"{name} ({stage})"),
        repo_id=card.get("repo_id", name),
        dataset_name=card.get("dataset_name", "cxrgen phantom chest X-rays" if phantom else default_dataset),
        dataset_id=card.get("dataset_id", default_dataset),
        is_phantom_data=phantom,
        training_setup={"stage": stage, **training_setup},
        initialization=initialization,
        metrics_source_description=metrics_source_description,
    )


def training_setup(stage_config, args, annotation, data, **extra):
    """The training-setup table of the model card (no paths of this machine: only file names)."""
    return {
        "config": Path(stage_config.source).name
        if stage_config.source.endswith((".yaml", ".yml"))
        else stage_config.source,
        "preset": stage_config.preset or "default",
        "data": Path(data).name,
        "training studies": len(annotation.get("train", [])),
        "optimizer": str(getattr(args.optim, "value", args.optim)),
        "learning rate": args.learning_rate,
        "weight decay": args.weight_decay,
        "schedule": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
        "gradient clipping (max norm)": args.max_grad_norm,
        "batch size per device": args.per_device_train_batch_size,
        "gradient accumulation": args.gradient_accumulation_steps,
        "epochs": args.num_train_epochs if args.max_steps <= 0 else f"max_steps={args.max_steps}",
        "seed": args.seed,
        **extra,
    }


def _eval_metrics(log_history, step):
    for entry in reversed(log_history):
        if entry.get("step") == step and any(key.startswith("eval_") for key in entry):
            return {METRIC_NAMES[key[5:]]: value for key, value in entry.items() if key[5:] in METRIC_NAMES}
    return None


def write_model_card(folder, info, metrics):
    """Build the card of ``folder`` (a saved model with its processor) and save it as its README.md."""
    from cxrgen.hub_cards.card import build_model_card, save_model_card

    card = build_model_card(
        folder,
        model_name=info.model_name,
        repo_id=info.repo_id,
        method=info.method,
        metrics=metrics or None,
        dataset_name=info.dataset_name,
        dataset_id=info.dataset_id,
        dataset_split=info.metrics_split,
        metrics_source_description=info.metrics_source_description if metrics else None,
        is_phantom_data=info.is_phantom_data,
        training_setup=info.training_setup,
        initialization=info.initialization,
    )
    return save_model_card(card, folder)


class ModelFolderCallback(TrainerCallback):
    """Makes every checkpoint a complete model folder. The Trainer already writes the safetensors weights, the config
    (with ``auto_map`` and ``custom_pipelines``), the remote code of model and processor and the processor itself
    (given as ``processing_class``); this adds the model card, with the evaluation metrics of that step if any.
    ``write_card`` as in :func:`save_final_model`."""

    def __init__(self, info, write_card=None):
        self.info = info
        self.write_card = write_card

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            if self.write_card is not None:
                self.write_card(folder, self.info, state.log_history, state.global_step)
            else:
                check_model_folder(folder)
                write_model_card(folder, self.info, _eval_metrics(state.log_history, state.global_step))


def check_model_folder(folder):
    """Raise unless ``folder`` has safetensors weights, a config with auto_map, remote code and a processor."""
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{folder}: no config.json; not a saved model folder.")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    missing = [name for name in ("model.safetensors", "processor_config.json") if not (folder / name).is_file()]
    missing += [
        f"{name} (remote code)"
        for name in {
            ref.split(".")[0] + ".py" for ref in (config.get("auto_map") or {}).values() if isinstance(ref, str)
        }
        if not (folder / name).is_file()
    ]
    if not config.get("auto_map"):
        missing.append("auto_map in config.json")
    if missing:
        raise ValueError(f"{folder} is not a complete model folder: missing {missing}.")


def save_final_model(trainer, output, info, write_card=None):
    """Save the trained model (the best checkpoint's weights when ``load_best_model_at_end``) with its processor,
    remote code, trainer state and card into ``output``; the card reports the evaluation metrics of that model.

    ``write_card(output, info, log_history, step)`` replaces the report-generation card (and its folder check) for
    stages whose folder is not a report generator."""
    output = Path(output)
    trainer.save_model(str(output))
    trainer.save_state()
    if trainer.is_world_process_zero():
        # training_args.bin is a pickle: the final folder is the one users load and publish, and it must hold
        # nothing that unpickles (checkpoints keep theirs for --resume).
        (output / "training_args.bin").unlink(missing_ok=True)
        state = trainer.state
        step = state.global_step
        if state.best_model_checkpoint is not None and trainer.args.load_best_model_at_end:
            step = int(Path(state.best_model_checkpoint).name.split("-")[-1])
        if write_card is not None:
            write_card(output, info, state.log_history, step)
        else:
            check_model_folder(output)
            write_model_card(output, info, _eval_metrics(state.log_history, step))
    return output


__all__ = [
    "METRIC_NAMES",
    "STAGES",
    "CardInfo",
    "ModelFolderCallback",
    "StageConfig",
    "build_cmcrl_processor",
    "build_training_args",
    "card_info",
    "check_best_metric",
    "check_model_folder",
    "cmcrl_config_and_processor",
    "data_options",
    "flatten_metrics",
    "get_stage",
    "is_phantom_annotation",
    "load_processor",
    "load_split",
    "load_stage_config",
    "report_metrics",
    "resume_checkpoint",
    "save_final_model",
    "training_setup",
    "write_model_card",
]
