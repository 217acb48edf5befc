"""The model options of the TRRG stages: a preset's model options (:func:`cxrgen.presets.stage_preset`) updated by
the YAML ``model`` section, sub-configs given as mappings, and the processor's image size."""

import dataclasses
from collections.abc import Iterable

from transformers import AutoConfig, PreTrainedConfig

from cxrgen.modeling.trrg.configuration_trrg import merge_config_values


def merge_model_options(
    base: dict, overrides: dict, config_class: type, extra_keys: Iterable[str], source: str
) -> dict:
    """Preset model options updated by the YAML ``model`` section: keys must be ``config_class`` fields or
    ``extra_keys``; a sub-config mapping is merged into the preset's unless it names another ``model_type``."""
    fields = {field.name for field in dataclasses.fields(config_class)}
    unknown = sorted(set(overrides) - fields - set(extra_keys))
    if unknown:
        raise ValueError(
            f"{source}: unknown key(s) {unknown} in 'model'; expected {config_class.__name__} fields or {list(extra_keys)}."
        )
    return merge_config_values(base, overrides)


def sub_config(values: dict | PreTrainedConfig | None, source: str, name: str) -> PreTrainedConfig | None:
    """A sub-config mapping with a ``model_type`` -> that transformers config (None stays None)."""
    if values is None or not isinstance(values, dict):
        return values
    values = dict(values)
    if "model_type" not in values:
        raise ValueError(f"{source}: model.{name} needs a model_type (e.g. swin, vit, bert, llama).")
    return AutoConfig.for_model(values.pop("model_type"), **values)


def vision_image_size(vision_config: PreTrainedConfig, settings: dict) -> int:
    """The image size of the processor: the ``processor`` option, else the vision config's ``image_size``."""
    size = settings.get("image_size", getattr(vision_config, "image_size", None))
    if not isinstance(size, int) or size < 1:
        raise ValueError(
            f"processor.image_size must be a positive integer (the vision config has none), got {size!r}."
        )
    return size


__all__ = ["merge_model_options", "sub_config", "vision_image_size"]
