"""The training stages and their configs.

Stage entry point
-----------------
Every stage module named in :data:`STAGES` exposes::

    run(config, data, images, output, resume=False, init=None, trainer_args=(), overwrite=False,
        skip_image_check=False, allow_pickle=False, backbone_weights=None) -> pathlib.Path

- ``config``: a preset name, a YAML file (schema below) or an already loaded dict of that schema;
- ``data``: an R2Gen ``annotation.json``; ``images``: the root its image paths are relative to;
- ``output``: the run folder; it receives the ``checkpoint-<step>`` folders and, at the end, the final model;
- ``resume``: continue from the newest complete ``checkpoint-<step>`` in ``output`` (same config, data and
  arguments); newer incomplete ones (a run killed while writing one) are skipped with a warning naming each;
- ``init``: a model folder of the previous stage to start from (RadCARE or a backbone folder for VLCI, TRRG stage 1
  for TRRG);
- ``trainer_args``: Trainer arguments as command-line strings, e.g. ``["--learning_rate", "1e-4",
  "--report_to", "tensorboard"]`` (see :func:`cxrgen.trainers.arguments.build_training_args`);
- ``overwrite``: a fresh run refuses an ``output`` that holds checkpoints or a model; with ``overwrite`` the earlier
  run's outputs there (model, card, ``evaluation-*``, checkpoints) are removed once the run is built, other files kept;
- ``skip_image_check``: do not decode every train and val image before the first step (said in the log); by default
  one error lists every unreadable image, and studies with more views than the model takes are refused;
- ``allow_pickle``: an ``init`` folder may hold pickle weights (``pytorch_model.bin``) instead of safetensors;
- ``backbone_weights``: where the CMCRL stages' vision backbone starts from (``cxrgen train --backbone-weights``):
  a local folder or a Hub id that transformers' ResNet classes load (the backbone, its base model or an image
  classifier, e.g. ``microsoft/resnet-101``, the reference's ImageNet start); it overrides the config's
  ``backbone_weights`` (a relative folder there is read from the working directory, as ``data`` is). Without it the
  backbone starts random. It cannot be combined with ``init``: an ``init`` folder (RadCARE or backbone) already holds
  the backbone, whatever it started from.

It returns ``output``, which then holds a complete model folder: safetensors weights, config with ``auto_map`` and
``custom_pipelines``, the remote code, the processor and a model card (README.md). ``cxrgen train <stage>`` calls it.
Every stage is a :class:`cxrgen.trainers.stage.TrainingStage`.

YAML config schema
------------------
Every top-level key is optional; unknown keys are an error::

    preset: tiny            # a preset of the stage's method: a name of cxrgen.presets.list_presets() or a file path
    backbone_weights: microsoft/resnet-101  # CMCRL stages: the backbone's start (see ``backbone_weights`` above)
    model: {...}            # model config overrides, e.g. {hidden_size: 64, dropout: 0.2}
    processor: {...}        # how a new processor is built: CMCRL {min_frequency: 3, cleaning_style: iu}
    data: {...}             # data options: CMCRL {augment: true}; VLCI also {balance_power: 0}; TRRG {balance_power: 0}
    training: {...}         # TrainingArguments fields (Seq2SeqTrainingArguments for generation stages)
    card: {...}             # model card: model_name, repo_id, dataset_name, dataset_id, phantom_data

Trainer arguments are merged as: stage defaults < YAML ``training`` < ``trainer_args``. YAML values pass through the
same parser as command-line values, so ``learning_rate: 1e-4`` (a string to YAML) becomes a float.
"""

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cxrgen.methods import METHODS, find_stage, resolve

# Stage name -> module exposing `run`, as the method registry (cxrgen.methods) names them.
STAGES = {stage.name: stage.module for method in METHODS.values() for stage in method.stages}
CONFIG_SECTIONS = ("preset", "backbone_weights", "model", "processor", "data", "training", "card")
# The top-level keys that hold a name, not a mapping.
NAME_KEYS = ("preset", "backbone_weights")


def get_stage(name: str) -> Callable[..., Path]:
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


@dataclass
class StageConfig:
    """A loaded stage config (see the module docstring for the schema); ``source`` names where it came from."""

    source: str
    preset: str | None = None
    backbone_weights: str | None = None
    model: dict = field(default_factory=dict)
    processor: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)
    card: dict = field(default_factory=dict)

    def section(self, name: str, allowed: Iterable[str]) -> dict:
        """A section's dict after checking its keys against ``allowed``."""
        values = getattr(self, name)
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            raise ValueError(
                f"{self.source}: unknown key(s) {unknown} in '{name}'; expected some of {sorted(allowed)}."
            )
        return values


def load_stage_config(config: str | os.PathLike | dict | StageConfig) -> StageConfig:
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
    names = {key: values.get(key) for key in NAME_KEYS}
    for key, value in names.items():
        if value is not None and not (isinstance(value, str) and value):
            raise ValueError(f"{source}: '{key}' must be a non-empty name, got {value!r}.")
    sections = {}
    for name in CONFIG_SECTIONS:
        if name in NAME_KEYS:
            continue
        section = values.get(name) or {}
        if not isinstance(section, dict):
            raise ValueError(f"{source}: '{name}' must be a mapping, got {type(section).__name__}.")
        sections[name] = dict(section)
    return StageConfig(source=source, **names, **sections)


__all__ = ["CONFIG_SECTIONS", "STAGES", "StageConfig", "get_stage", "load_stage_config"]
