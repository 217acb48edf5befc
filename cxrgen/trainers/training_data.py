"""The training data of a stage: annotation splits as ``datasets.Dataset`` and the YAML ``data`` options."""

import os

import datasets
import torch

from cxrgen.data.annotation import annotation_to_dataset_dict, read_annotation
from cxrgen.data.sampling import observation_balance_weights
from cxrgen.trainers.stage_config import StageConfig


def load_split(
    annotation: dict | str | os.PathLike,
    image_root: str | os.PathLike,
    split: str,
    required: bool = True,
    images_checked: bool = False,
) -> datasets.Dataset | None:
    """One split of an annotation (object or path) as a ``datasets.Dataset`` with decoded ``images``.

    Returns None for a missing or empty split unless ``required``, in which case that is an error.
    ``images_checked``: the caller decode-checked the split's images (as
    :func:`cxrgen.data.annotation.annotation_to_dataset_dict` takes it).
    """
    if not isinstance(annotation, dict):
        annotation = read_annotation(annotation)
    if not annotation.get(split):
        if required:
            raise ValueError(
                f"The annotation has no '{split}' studies (splits: "
                f"{ {name: len(entries) for name, entries in annotation.items()} }); training needs them."
            )
        return None
    return annotation_to_dataset_dict({split: annotation[split]}, image_root, images_checked=images_checked)[split]


def is_phantom_annotation(annotation: dict) -> bool:
    """Whether an annotation was written by :func:`cxrgen.data.phantom_benchmark.build_phantom_benchmark`: every
    study's images are its numbered phantom views ``<id>/0.png``, ``<id>/1.png``, ..."""
    entries = [entry for split in annotation.values() for entry in split]
    return bool(entries) and all(
        entry["image_path"] == [f"{entry['id']}/{index}.png" for index in range(len(entry["image_path"]))]
        for entry in entries
    )


def data_options(stage_config: StageConfig, balance: bool = False, augment: bool = True) -> dict:
    """The YAML ``data`` options of a stage: ``augment`` (stages that augment; default true) applies the image
    processor's train-time augmentation (random crop and flip, deterministic per batch) to the training data only;
    with ``balance`` (stages that sample studies), ``balance_power`` (default 0: off) samples training studies by the
    rarity of their positive observations (:func:`cxrgen.data.sampling.observation_balance_weights`)."""
    allowed = ("augment",) * augment + ("balance_power",) * balance
    options = {"augment": augment, "balance_power": 0.0, **stage_config.section("data", allowed)}
    if not isinstance(options["augment"], bool):
        raise ValueError(f"{stage_config.source}: data.augment must be true or false, got {options['augment']!r}.")
    power = options["balance_power"]
    if isinstance(power, bool) or not isinstance(power, (int, float)) or power < 0:
        raise ValueError(f"{stage_config.source}: data.balance_power must be a number >= 0, got {power!r}.")
    return options


def sample_weights(train: datasets.Dataset, options: dict) -> torch.Tensor | None:
    """Per-study sampling weights of the training split for ``data.balance_power`` (None when it is off)."""
    if not options["balance_power"]:
        return None
    return observation_balance_weights(list(train["labels"]), options["balance_power"])


__all__ = ["data_options", "is_phantom_annotation", "load_split", "sample_weights"]
