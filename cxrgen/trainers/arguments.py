"""The Trainer arguments of a stage (stage defaults < YAML ``training`` < command line) and its run folder."""

import argparse
import dataclasses
import fnmatch
import json
import logging
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from transformers import HfArgumentParser, TrainingArguments
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import CONFIG_NAME, SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, WEIGHTS_NAME

from cxrgen.trainers.metrics import METRIC_NAMES

logger = logging.getLogger(__name__)


# What a run writes at the top of its run folder besides the checkpoints: the final model folder (weights, config,
# remote code, processor, card, trainer state), TRRG's LoRA parts and the reports of `cxrgen evaluate`.
RUN_OUTPUT_FILES = (
    "README.md",
    "config.json",
    "generation_config.json",
    "trainer_state.json",
    "training_args.bin",
    "*.safetensors",
    "*.safetensors.index.json",
    "pytorch_model*.bin",
    "adapter_config.json",
    "*processor_config.json",
    "tokenizer*.json",
    "special_tokens_map.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "chat_template.jinja",
    "configuration_*.py",
    "modeling_*.py",
    "processing_*.py",
    "image_processing_*.py",
    "pipeline_*.py",
    "tokenization_*.py",
    "cleaning.py",
)
RUN_OUTPUT_FOLDERS = (f"{PREFIX_CHECKPOINT_DIR}-*", "evaluation-*", "adapter", "base-model")
# A folder holds a model when one of these lies at its top.
MODEL_FILES = ("config.json", "README.md", "*.safetensors", "pytorch_model*.bin", "adapter_config.json")
WEIGHTS_FILES = (SAFE_WEIGHTS_NAME, SAFE_WEIGHTS_INDEX_NAME, "adapter_model.safetensors", WEIGHTS_NAME)
_CHECKPOINT = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def checkpoints(output: str | os.PathLike) -> list[Path]:
    """The ``checkpoint-<step>`` folders of a run folder, newest (highest step) first."""
    output = Path(output)
    found = (
        [path for path in output.iterdir() if path.is_dir() and _CHECKPOINT.match(path.name)]
        if output.is_dir()
        else []
    )
    return sorted(found, key=lambda path: int(_CHECKPOINT.match(path.name).group(1)), reverse=True)


def checkpoint_problem(folder: str | os.PathLike) -> str | None:
    """Why a ``checkpoint-<step>`` folder cannot be resumed from, or None when it is complete.

    The Trainer writes the weights, then the optimizer, scheduler and RNG state, then ``trainer_state.json``; a model
    folder checkpoint (one with ``config.json``) then gets its model card from
    :class:`~cxrgen.trainers.model_folders.ModelFolderCallback`, written to a temporary name and renamed. So a
    checkpoint is complete when it has weights, a ``trainer_state.json`` that parses and, if it has ``config.json``,
    its ``README.md``: a run killed while writing one leaves a folder that fails one of these."""
    folder = Path(folder)
    if not any((folder / name).is_file() for name in WEIGHTS_FILES):
        return f"no weights ({' / '.join(WEIGHTS_FILES)})"
    try:
        json.loads((folder / TRAINER_STATE_NAME).read_text())
    except FileNotFoundError:
        return f"no {TRAINER_STATE_NAME}"
    except (OSError, ValueError) as error:
        return f"{TRAINER_STATE_NAME} does not parse ({error})"
    if (folder / CONFIG_NAME).is_file() and not (folder / "README.md").is_file():
        return "no model card (README.md), which is written last"
    return None


def _matching(folder: Path, patterns: Sequence[str], directories: bool) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_dir() == directories and any(fnmatch.fnmatch(path.name, pattern) for pattern in patterns)
    )


def previous_run_outputs(output: str | os.PathLike) -> list[Path]:
    """The files and folders of an earlier run in a run folder (:data:`RUN_OUTPUT_FILES`, :data:`RUN_OUTPUT_FOLDERS`);
    anything else there (the user's own files) is not a run's."""
    output = Path(output)
    return _matching(output, RUN_OUTPUT_FOLDERS, directories=True) + _matching(output, RUN_OUTPUT_FILES, False)


def remove_previous_run(output: str | os.PathLike) -> None:
    """Remove the outputs of an earlier run from a run folder (``--overwrite``; :func:`previous_run_outputs`), each
    named in the log, so that the new run's model, card and evaluations are not mixed with the old ones."""
    for path in previous_run_outputs(output):
        logger.warning("--overwrite: removing %s of the earlier run.", path)
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def resume_checkpoint(output: str | os.PathLike, resume: bool, overwrite: bool = False) -> str | None:
    """The checkpoint to resume from (``resume=True``: the newest complete one in ``output``), or None for a fresh run.

    Resuming skips the newer checkpoints that are incomplete (:func:`checkpoint_problem`, e.g. a run killed while
    writing one), with a warning naming each. A fresh run refuses an ``output`` that already holds checkpoints or a
    model, so nothing of an earlier run is overwritten or mixed in, unless ``overwrite``: then the earlier run's
    outputs (:func:`previous_run_outputs`) are removed first, and the folder's other files kept."""
    output = Path(output)
    if resume and overwrite:
        raise ValueError("--resume continues the run in the output folder and --overwrite removes it: pass one.")
    if resume:
        found = checkpoints(output)
        if not found:
            raise ValueError(f"--resume: {output} has no {PREFIX_CHECKPOINT_DIR}-<step> folder to resume from.")
        incomplete = []
        for folder in found:
            problem = checkpoint_problem(folder)
            if problem is None:
                for name, reason in incomplete:
                    logger.warning(
                        "--resume: skipping the incomplete %s (%s); resuming from %s.", name, reason, folder.name
                    )
                logger.info("Resuming from %s", folder)
                return str(folder)
            incomplete.append((folder.name, problem))
        raise ValueError(
            f"--resume: {output} has no complete {PREFIX_CHECKPOINT_DIR}-<step> folder to resume from:\n"
            + "\n".join(f"- {name}: {reason}" for name, reason in incomplete)
        )
    if overwrite:
        return None
    found = checkpoints(output)
    if found:
        raise ValueError(
            f"{output} already holds checkpoints ({found[0].name}); pass --resume to continue that run, "
            "--overwrite to replace it, or choose another output folder."
        )
    model = [path.name for path in _matching(output, MODEL_FILES, directories=False)]
    if model:
        raise ValueError(
            f"{output} already holds a model ({', '.join(model)}); pass --overwrite to replace that run's outputs "
            "(model, card, evaluations) or choose another output folder."
        )
    return None


def _argv(values: dict) -> tuple[list[str], dict]:
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
    output_dir: str | os.PathLike,
    defaults: dict,
    overrides: dict | None = None,
    cli_args: Sequence[str] = (),
    args_class: type[TrainingArguments] = TrainingArguments,
    source: str = "config",
) -> TrainingArguments:
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


def check_best_metric(args: TrainingArguments) -> None:
    """Refuse a ``metric_for_best_model`` that evaluation will not produce (before any training time is spent)."""
    metric = args.metric_for_best_model
    if metric is None:
        return
    key = metric[len("eval_") :] if metric.startswith("eval_") else metric
    if key != "loss" and key not in METRIC_NAMES:
        raise ValueError(f"metric_for_best_model={metric!r}: expected 'loss' or one of {list(METRIC_NAMES)}.")


def evaluates(args: TrainingArguments) -> bool:
    """Whether the run evaluates during training (``eval_strategy`` is not "no")."""
    return str(getattr(args.eval_strategy, "value", args.eval_strategy)) != "no"


__all__ = [
    "build_training_args",
    "check_best_metric",
    "checkpoint_problem",
    "checkpoints",
    "evaluates",
    "previous_run_outputs",
    "remove_previous_run",
    "resume_checkpoint",
]
