"""Batch collators for multi-view chest X-ray studies, and the per-batch task schedule of RadCARE pre-training.

Rows are what :func:`cxrgen.data.annotation.annotation_to_dataset_dict` gives: ``{"id", "images": [views...],
"report", ...}``. The collators turn a list of rows into model inputs with the model's processor; everything else in
a row (such as the 14 ``labels`` codes) is not a model input and is left out. Views may be decoded PIL images or, from
a dataset built with ``decode_images=False``, ``{"path", "bytes"}`` dicts, which the processor then reads with
:func:`~cxrgen.processing.image_processing_cxr.load_image` exactly as at inference (DICOM files included).

Train-time augmentation is deterministic: each batch draws its crops and flips from a generator seeded with the
collator's seed and the ids of the batch's rows, never from the global random state. A run resumed from a checkpoint
(whose data loader skips the batches already seen, without collating them) therefore augments every later batch
exactly as the uninterrupted run did.
"""

import io
import os
import zlib
from collections.abc import Sequence

import datasets
import numpy as np
import torch
from PIL import Image
from transformers import BaseImageProcessor, BatchFeature, ProcessorMixin

from cxrgen.labels import binarize


def _batch_generator(seed, rows):
    key = f"{seed}:" + "\x1f".join(str(row["id"]) for row in rows)
    return torch.Generator().manual_seed(zlib.crc32(key.encode("utf-8")))


def view_name(view: object) -> str:
    """How an error names one view of a row: its file path (a path, a ``datasets`` image dict or a PIL image read
    from a file), else its type."""
    if isinstance(view, (str, os.PathLike)):
        return str(view)
    if isinstance(view, dict) and view.get("path"):
        return view["path"]
    return getattr(view, "filename", "") or f"<{type(view).__name__}>"


def study_views(row: dict) -> list:
    """The views of a row as the processor takes them: an undecoded ``datasets`` image becomes its path (or, when it
    holds the file's bytes, the image read from them), so the processor's reader decodes it."""
    views = []
    for view in row["images"]:
        if isinstance(view, dict):
            view = view["path"] if view.get("bytes") is None else Image.open(io.BytesIO(view["bytes"]))
        views.append(view)
    return views


def study_description(row: dict) -> str:
    """``study '<id>' (files a.png, b.png)``: a row named as the user knows it, never by its batch position."""
    return f"study {row['id']!r} (files {', '.join(view_name(view) for view in row['images'])})"


def check_rows(
    rows: list[dict], fields: tuple[str, ...] = ("id", "images", "report"), max_views: int | None = None
) -> None:
    """Raise ``ValueError`` naming the study (id and files) of a row without ``fields`` (which include ``images``),
    without views, or with more than ``max_views`` views."""
    for index, row in enumerate(rows):
        if "id" not in row:
            raise ValueError(f"Batch row {index}: missing field 'id'; expected rows with {', '.join(fields)}.")
        for field in fields:
            if field not in row:
                raise ValueError(
                    f"Study {row['id']!r}: missing field {field!r}; expected rows with {', '.join(fields)}."
                )
        if not row["images"]:
            raise ValueError(f"Study {row['id']!r}: 'images' is empty; expected at least one view.")
        if max_views is not None and len(row["images"]) > max_views:
            raise ValueError(
                f"{study_description(row).capitalize()} has {len(row['images'])} views, more than the {max_views} "
                "the model takes (num_views); drop the extra views from the annotation "
                "(cxrgen.data.validation.check_views_per_study finds them all before training)."
            )


def processor_num_views(processor: object, num_views: int | None = None) -> int | None:
    """The most views a batch may give ``processor``: ``num_views`` when set, else its image processor's."""
    if num_views is not None:
        return num_views
    return getattr(getattr(processor, "image_processor", processor), "num_views", None)


class StudyCollator:
    """Rows of multi-view studies -> ``pixel_values`` (B, V, 3, H, W), ``pixel_mask`` (B, V) and ``labels``.

    ``processor`` is a report-generation processor called as ``processor(images=[views...], text=[reports],
    num_views=..., max_length=...)`` (e.g. ``CmcrlProcessor``); studies with fewer than ``num_views`` views are
    padded and masked. ``augment_seed`` switches on the image processor's train-time augmentation
    (``do_augment``), seeded per batch (see the module docstring); ``None`` means no augmentation.
    """

    def __init__(
        self,
        processor: ProcessorMixin,
        num_views: int | None = None,
        max_length: int | None = None,
        augment_seed: int | None = None,
    ):
        self.processor = processor
        self.num_views = num_views
        self.max_length = max_length
        self.augment_seed = augment_seed

    def _image_kwargs(self, rows):
        if self.augment_seed is None:
            return {}
        return {"do_augment": True, "generator": _batch_generator(self.augment_seed, rows)}

    def __call__(self, rows: list[dict]) -> BatchFeature:
        check_rows(rows, max_views=processor_num_views(self.processor, self.num_views))
        return self.processor(
            images=[study_views(row) for row in rows],
            text=[row["report"] for row in rows],
            num_views=self.num_views,
            max_length=self.max_length,
            **self._image_kwargs(rows),
        )


class PretrainingCollator(StudyCollator):
    """Rows of single-view samples -> RadCARE inputs: ``pixel_values`` (B, 1, 3, H, W), ``input_ids`` ([BOS] words
    [EOS] [PAD]...) and ``attention_mask``. Reports are cleaned and tokenized by the processor, truncated to
    ``max_length`` tokens (keeping [EOS]). Split studies into single views first (:func:`split_views`)."""

    def __init__(self, processor: ProcessorMixin, max_length: int | None = None, augment_seed: int | None = None):
        super().__init__(processor, num_views=1, max_length=max_length, augment_seed=augment_seed)

    def __call__(self, rows: list[dict]) -> BatchFeature:
        check_rows(rows)
        for row in rows:
            if len(row["images"]) != 1:
                raise ValueError(
                    f"{study_description(row).capitalize()} has {len(row['images'])} views; RadCARE pre-trains on "
                    "single images: split the studies with cxrgen.data.collators.split_views first."
                )
        batch = self.processor(images=[study_views(row) for row in rows], num_views=1, **self._image_kwargs(rows))
        del batch["pixel_mask"]  # one real view per sample: nothing to mask
        labels = self.processor.encode_reports([row["report"] for row in rows], self.max_length)
        batch["attention_mask"] = (labels != -100).long()
        batch["input_ids"] = labels.masked_fill(labels == -100, self.processor.tokenizer.pad_token_id)
        return batch


class ObservationCollator(StudyCollator):
    """Rows of single-view samples (:func:`split_views`) -> ``pixel_values`` (B, 3, H, W) and float ``labels``
    (B, 14), 1 for the positive observations of the view's study. ``image_processor`` is a ``CxrImageProcessor``;
    ``augment_seed`` as in :class:`StudyCollator`."""

    def __init__(self, image_processor: BaseImageProcessor, augment_seed: int | None = None):
        super().__init__(image_processor, num_views=1, augment_seed=augment_seed)

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        check_rows(rows, ("id", "images", "labels"), max_views=1)
        pixels = self.processor(images=[study_views(row) for row in rows], num_views=1, **self._image_kwargs(rows))
        labels = torch.tensor([binarize(row["labels"]) for row in rows], dtype=torch.float32)
        return {"pixel_values": pixels["pixel_values"][:, 0], "labels": labels}


def split_views(dataset: datasets.Dataset) -> datasets.Dataset:
    """One row per view: a study ``id`` with V views becomes rows ``id#0`` .. ``id#{V-1}``, each with one image, the
    study's report and its ``labels`` when the dataset has them (other columns are dropped). Images stay undecoded
    while splitting, so nothing is re-encoded."""
    image_feature = dataset.features["images"]
    undecoded = dataset.cast_column("images", datasets.List(datasets.Image(decode=False)))
    carried = [name for name in ("report", "labels") if name in dataset.column_names]

    def explode(batch):
        rows = {name: [] for name in ("id", "images", *carried)}
        for position, (study_id, views) in enumerate(zip(batch["id"], batch["images"])):
            for index, view in enumerate(views):
                rows["id"].append(f"{study_id}#{index}")
                rows["images"].append([view])
                for name in carried:
                    rows[name].append(batch[name][position])
        return rows

    split = undecoded.map(explode, batched=True, remove_columns=undecoded.column_names)
    return split.cast_column("images", image_feature)


class TaskSchedule:
    """Draws the RadCARE task of each training micro-batch from ``probabilities`` (one per task).

    The draw depends only on ``(seed, optimizer step, micro-batch index within the step)``: every process of a
    distributed run trains the same task at the same step (so DDP sees the same parameters used on every rank), and a
    run resumed from a checkpoint continues the task sequence of the uninterrupted run.
    """

    def __init__(self, tasks: Sequence[str], probabilities: Sequence[float], seed: int):
        probabilities = np.asarray(probabilities, dtype=np.float64)
        if len(tasks) != len(probabilities) or (probabilities < 0).any() or probabilities.sum() <= 0:
            raise ValueError(
                f"Task probabilities {probabilities.tolist()}: expected {len(tasks)} non-negative weights for {list(tasks)}."
            )
        self.tasks = tuple(tasks)
        self.probabilities = probabilities / probabilities.sum()
        self.seed = seed

    def task(self, step: int, micro_batch: int = 0) -> str:
        """The task of micro-batch ``micro_batch`` of optimizer step ``step``."""
        rng = np.random.default_rng([self.seed, step, micro_batch])
        return self.tasks[int(rng.choice(len(self.tasks), p=self.probabilities))]


__all__ = [
    "ObservationCollator",
    "PretrainingCollator",
    "StudyCollator",
    "TaskSchedule",
    "check_rows",
    "processor_num_views",
    "split_views",
    "study_description",
    "study_views",
    "view_name",
]
