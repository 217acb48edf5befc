"""One annotation of several datasets, for RadCARE as the reference pre-trains it: IU-Xray and MIMIC-CXR together
(``config/vlp.json`` of WissingChen/VLCI, ``dataset_name: mix``), with one vocabulary over both.

An annotation's image paths are relative to one image root, and the two datasets' images live under two. A mixed
annotation therefore puts each dataset's paths under a folder of its name (``iu-xray/CXR1_1_IM-0001/0.png``,
``mimic-cxr/files/p10/...``), and :func:`prepare_mixed` makes that root: ``<output>/images`` holding one link per
dataset to the dataset's own image root, so ``--images <output>/images`` reads both and no file is copied. The
annotation format does not change.

Each entry keeps every field it had and gains ``dataset`` (the dataset's name); the splits are merged (train with
train, val with val, test with test). Ids must be distinct over all the datasets: two studies of one id would be one
study to the leakage and duplicate checks, so a collision is an error naming the id and both datasets.
"""

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from cxrgen.data.annotation import SPLITS, AnnotationError, read_annotation, validate_annotation, write_annotation
from cxrgen.data.validation import check_images, log_skipped_image_check

logger = logging.getLogger(__name__)

DATASET_FIELD = "dataset"
IMAGES_FOLDER = "images"


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ValueError(f"dataset name {name!r}: expected a non-empty folder name (e.g. iu-xray, mimic-cxr).")


def mix_annotations(annotations: Mapping[str, dict]) -> dict:
    """One annotation of ``{dataset name: annotation}`` (see the module docstring): image paths under the dataset's
    folder, a ``dataset`` field on every entry, splits merged in the order given.

    Raises:
        AnnotationError: an id in two datasets (named with both), or an entry that already has a ``dataset`` field.
        ValueError: fewer than two datasets, or a name that cannot be a folder.
    """
    if len(annotations) < 2:
        raise ValueError(f"mixing needs at least two datasets, got {list(annotations)}.")
    mixed = {}
    owner = {}
    for name, annotation in annotations.items():
        _check_name(name)
        validate_annotation(annotation, name)
        for split in SPLITS:
            for entry in annotation.get(split, []):
                if DATASET_FIELD in entry:
                    raise AnnotationError(
                        f"{name}: split '{split}', id '{entry['id']}' already has a '{DATASET_FIELD}' field "
                        f"({entry[DATASET_FIELD]!r}); mix the original annotations, not a mixed one."
                    )
                if entry["id"] in owner:
                    raise AnnotationError(
                        f"id '{entry['id']}' is in both {owner[entry['id']]} and {name}: the mixed studies need "
                        "distinct ids (rename one dataset's ids before mixing)."
                    )
                owner[entry["id"]] = name
                paths = [f"{name}/{path}" for path in entry["image_path"]]
                mixed.setdefault(split, []).append({**entry, "image_path": paths, DATASET_FIELD: name})
    validate_annotation(mixed, "mixed annotation")
    return mixed


def _link(link: Path, target: Path) -> None:
    """``link`` -> ``target`` (a folder); an existing link to the same folder is kept, anything else there refused."""
    if link.is_symlink() or link.exists():
        if link.is_symlink() and link.resolve() == target.resolve():
            return
        raise ValueError(f"{link} already exists and is not a link to {target}; remove it or choose another output.")
    link.symlink_to(target.resolve(), target_is_directory=True)


def prepare_mixed(
    output: str | os.PathLike,
    sources: Mapping[str, tuple[str | os.PathLike, str | os.PathLike]],
    skip_image_check: bool = False,
) -> Path:
    """Write the mixed annotation of ``{dataset name: (annotation.json, image root)}`` as
    ``<output>/annotation.json`` and link each image root as ``<output>/images/<name>``; returns the annotation's
    path (its image root is ``<output>/images``). Before the annotation is written every image is decoded through
    the links (:func:`cxrgen.data.validation.check_images`) unless ``skip_image_check`` (said in the log).

    Raises:
        ValueError: an image root that is not a folder, a path in the way of a link, unreadable images, or the errors
            of :func:`mix_annotations` and :func:`~cxrgen.data.annotation.read_annotation` (naming the file).
    """
    output = Path(output)
    annotations = {}
    for name, (annotation, images) in sources.items():
        _check_name(name)
        if not Path(images).is_dir():
            raise ValueError(f"{name}: the image root {images} is not a folder.")
        annotations[name] = read_annotation(annotation)
    mixed = mix_annotations(annotations)
    root = output / IMAGES_FOLDER
    root.mkdir(parents=True, exist_ok=True)
    for name, (_, images) in sources.items():
        _link(root / name, Path(images))
    if skip_image_check:
        log_skipped_image_check(root)
    else:
        check_images(mixed, root)
    counts = {split: len(entries) for split, entries in mixed.items()}
    logger.info("Mixed %s: %s studies per split; image root %s", list(sources), counts, root)
    return write_annotation(mixed, output / "annotation.json")


__all__ = ["DATASET_FIELD", "IMAGES_FOLDER", "mix_annotations", "prepare_mixed"]
