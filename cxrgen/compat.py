"""The one place where the package (outside the self-contained model folders) bridges transformers releases.

transformers 5.23 renamed gradient checkpointing to activation checkpointing (`activation_checkpointing_enable`,
`TrainingArguments.activation_checkpointing`) and keeps the old names as deprecated aliases; cxrgen supports
releases on both sides of the rename.
"""

import dataclasses

from transformers import PreTrainedModel, TrainingArguments

_TRAINING_FIELDS = {field.name for field in dataclasses.fields(TrainingArguments)}

# The TrainingArguments field (and command-line option) that switches checkpointing on in the running release.
CHECKPOINTING_ARGUMENT = (
    "activation_checkpointing" if "activation_checkpointing" in _TRAINING_FIELDS else "gradient_checkpointing"
)


def checkpointing_requested(args: TrainingArguments) -> bool:
    """Whether the training arguments ask for activation (gradient) checkpointing, under either name."""
    return bool(getattr(args, CHECKPOINTING_ARGUMENT))


def enable_checkpointing(model: PreTrainedModel, **kwargs) -> None:
    """Turn on activation (gradient) checkpointing with the running release's method name."""
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable(**kwargs)
