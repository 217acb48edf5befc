"""The Trainer arguments of a stage (stage defaults < YAML ``training`` < command line) and its run folder."""

import argparse
import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from transformers import HfArgumentParser, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from cxrgen.trainers.metrics import METRIC_NAMES

logger = logging.getLogger(__name__)


def resume_checkpoint(output: str | os.PathLike, resume: bool) -> str | None:
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


__all__ = ["build_training_args", "check_best_metric", "evaluates", "resume_checkpoint"]
