"""The R2Gen ``annotation.json`` format and its conversion to a ``datasets.DatasetDict``.

An annotation is ``{"train": [...], "val": [...], "test": [...]}`` (any non-empty subset of the three splits).
Each entry has a string ``id`` (unique within its split), a string ``report`` and a non-empty list of image paths
``image_path`` (relative to an image root). Optional fields: ``split`` (must name the split the entry is in, as in
R2Gen's files), ``labels`` (14 CheXpert mention codes, see :mod:`cxrgen.labels`) and any other extra field
(``study_id``, ``impression``, MeSH tags, ...).

In the ``DatasetDict`` every split has the columns ``id``, ``images`` (``List(Image())`` with absolute paths),
``report`` and ``labels`` (``List(Value("int8"))``). An extra field becomes an additional column of a split when
every entry of that split has it (its type is inferred by Arrow); a field only some entries have is left out of
the dataset with a warning naming it, and stays in the annotation file. ``split`` is not a column: the
``DatasetDict`` key already says it.
"""

import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import datasets
import pyarrow as pa

from cxrgen.data.validation import check_images, log_skipped_image_check
from cxrgen.labeler import label_reports
from cxrgen.labels import NUM_OBSERVATIONS

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
_ENTRY_KEY_ORDER = ("id", "report", "image_path", "split", "labels")
_DATASET_CORE = ("id", "images", "report", "labels")


class AnnotationError(ValueError):
    """An annotation file or object that does not follow the R2Gen format."""


def validate_annotation(annotation: object, source: str = "annotation") -> None:
    """Check the structure of an annotation object; raise :class:`AnnotationError` naming ``source`` and the field."""
    if not isinstance(annotation, dict):
        raise AnnotationError(
            f"{source}: expected a JSON object with 'train', 'val' and/or 'test' lists, got {type(annotation).__name__}."
        )
    unknown = sorted(set(annotation) - set(SPLITS))
    if unknown:
        raise AnnotationError(f"{source}: unknown top-level key(s) {unknown}; expected only {list(SPLITS)}.")
    if not annotation:
        raise AnnotationError(f"{source}: no split found; expected at least one of {list(SPLITS)}.")
    for split, entries in annotation.items():
        if not isinstance(entries, list):
            raise AnnotationError(
                f"{source}: split '{split}' must be a list of entries, got {type(entries).__name__}."
            )
        seen = {}
        for index, entry in enumerate(entries):
            _validate_entry(entry, f"{source}: split '{split}', entry {index}", split)
            if entry["id"] in seen:
                raise AnnotationError(
                    f"{source}: split '{split}' has the id '{entry['id']}' twice (entries {seen[entry['id']]} and {index});"
                    " ids must be unique within a split."
                )
            seen[entry["id"]] = index
    _check_no_leakage(annotation, source)


def _check_no_leakage(annotation, source):
    # A study in two splits would be scored on what the model was trained (or selected) on.
    splits_of = {}
    for split, entries in annotation.items():
        for entry in entries:
            splits_of.setdefault(entry["id"], []).append(split)
    leaked = {study: splits for study, splits in splits_of.items() if len(splits) > 1}
    if leaked:
        shown = "; ".join(f"'{study}' in {' and '.join(splits)}" for study, splits in list(leaked.items())[:20])
        more = f" (and {len(leaked) - 20} more)" if len(leaked) > 20 else ""
        raise AnnotationError(
            f"{source}: {len(leaked)} id(s) appear in more than one split: {shown}{more}. A study belongs to exactly "
            "one split; otherwise the test or validation scores measure studies the model was trained on."
        )


def _validate_entry(entry, where, split):
    if not isinstance(entry, dict):
        raise AnnotationError(
            f"{where}: expected an object with 'id', 'report' and 'image_path', got {type(entry).__name__}."
        )
    entry_id = entry.get("id")
    if not isinstance(entry_id, str) or not entry_id:
        raise AnnotationError(f"{where}: field 'id' must be a non-empty string, got {entry_id!r}.")
    where = f"{where} (id '{entry_id}')"
    if not isinstance(entry.get("report"), str):
        raise AnnotationError(f"{where}: field 'report' must be a string, got {entry.get('report')!r}.")
    paths = entry.get("image_path")
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p for p in paths):
        raise AnnotationError(
            f"{where}: field 'image_path' must be a non-empty list of non-empty strings, got {paths!r}."
        )
    if "split" in entry and entry["split"] != split:
        raise AnnotationError(f"{where}: field 'split' is {entry['split']!r} but the entry is in the '{split}' list.")
    if "labels" in entry:
        check_labels(entry["labels"], f"{where}: field 'labels'")


def check_labels(labels: object, where: str) -> None:
    """Raise :class:`AnnotationError` unless ``labels`` is a list of 14 integer mention codes in 0..3."""
    if (
        not isinstance(labels, (list, tuple))
        or len(labels) != NUM_OBSERVATIONS
        or not all(isinstance(code, int) and not isinstance(code, bool) and 0 <= code <= 3 for code in labels)
    ):
        raise AnnotationError(f"{where}: expected a list of {NUM_OBSERVATIONS} integer codes in 0..3, got {labels!r}.")


def read_annotation(path: str | os.PathLike) -> dict:
    """Read and validate an R2Gen ``annotation.json``; errors name the file and the offending split/entry/field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise AnnotationError(f"{path}: cannot read the annotation file ({error}).") from error
    try:
        annotation = json.loads(text)
    except json.JSONDecodeError as error:
        raise AnnotationError(
            f"{path}: invalid JSON at line {error.lineno}, column {error.colno} (character {error.pos}): {error.msg}."
        ) from error
    validate_annotation(annotation, str(path))
    return annotation


def write_annotation(annotation: dict, path: str | os.PathLike) -> Path:
    """Validate and write ``annotation`` as pretty JSON (splits in train/val/test order, entry keys in a fixed order).

    The file is replaced atomically, so an interrupted write never leaves a truncated annotation behind.
    """
    path = Path(path)
    validate_annotation(annotation, str(path))
    ordered = {
        split: [_ordered_entry(entry) for entry in annotation[split]] for split in SPLITS if split in annotation
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(ordered, stream, indent=2, ensure_ascii=False)
            stream.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _ordered_entry(entry):
    keys = [key for key in _ENTRY_KEY_ORDER if key in entry] + sorted(set(entry) - set(_ENTRY_KEY_ORDER))
    return {key: entry[key] for key in keys}


def annotation_to_dataset_dict(
    annotation_or_path: dict | str | os.PathLike,
    image_root: str | os.PathLike,
    labeler: Callable[[str], list[int]] | None = None,
    skip_image_check: bool = False,
    decode_images: bool = True,
    images_checked: bool = False,
) -> datasets.DatasetDict:
    """Turn an annotation (object or file) into a ``DatasetDict`` with ``id``, ``images``, ``report``, ``labels``.

    Image paths are resolved against ``image_root``. Before anything is built every image is decoded
    (:func:`cxrgen.data.validation.check_images`), and one error lists every missing or unreadable file with its
    split and entry; ``skip_image_check=True`` (for data checked before) only checks that the files exist, and says
    so in the log. ``images_checked=True`` is for a caller that decode-checked them already (one check over several
    splits, so that every bad file comes in one message): it only checks that the files exist, and logs nothing.
    ``decode_images=False`` keeps ``images`` undecoded (``{"path", "bytes"}``), for the collators and the processor to
    read with :func:`~cxrgen.processing.image_processing_cxr.load_image`, the reader inference uses (DICOM included).
    ``labels`` come from an entry's ``labels`` field when it has one, else from ``labeler(report)`` (default:
    :func:`cxrgen.labeler.label_reports`).
    """
    if isinstance(annotation_or_path, dict):
        annotation = annotation_or_path
        validate_annotation(annotation)
    else:
        annotation = read_annotation(annotation_or_path)
    image_root = Path(image_root)
    _check_reports(annotation)
    if skip_image_check or images_checked:
        if not images_checked:
            log_skipped_image_check(image_root)
        _check_images_exist(annotation, image_root)
    else:
        check_images(annotation, image_root)
    resolved = {
        split: [[os.path.abspath(image_root / relative) for relative in entry["image_path"]] for entry in entries]
        for split, entries in annotation.items()
    }
    unlabeled = [entry["report"] for entries in annotation.values() for entry in entries if "labels" not in entry]
    # The project's labeler labels each distinct report once, in worker processes for large annotations.
    found = iter(label_reports(unlabeled) if labeler is None else [labeler(report) for report in unlabeled])

    splits = {}
    for split, entries in annotation.items():
        labels = []
        for entry in entries:
            if "labels" in entry:
                labels.append(list(entry["labels"]))
            else:
                codes = list(next(found))
                check_labels(codes, f"labeler output for split '{split}', id '{entry['id']}'")
                labels.append(codes)
        columns = {
            "id": [entry["id"] for entry in entries],
            "images": resolved[split],
            "report": [entry["report"] for entry in entries],
            "labels": labels,
        }
        features = {
            "id": datasets.Value("string"),
            "images": datasets.List(datasets.Image(decode=decode_images)),
            "report": datasets.Value("string"),
            "labels": datasets.List(datasets.Value("int8")),
        }
        for field in _extra_fields(split, entries):
            values = [entry[field] for entry in entries]
            try:
                arrow_type = pa.array(values).type
            except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
                raise AnnotationError(
                    f"Split '{split}': extra field '{field}' has values of incompatible types ({error})."
                ) from error
            columns[field] = values
            features[field] = datasets.Features.from_arrow_schema(pa.schema([(field, arrow_type)]))[field]
        splits[split] = datasets.Dataset.from_dict(columns, features=datasets.Features(features), split=split)
    return datasets.DatasetDict(splits)


def _check_reports(annotation):
    empty = [
        (split, entry["id"])
        for split, entries in annotation.items()
        for entry in entries
        if not entry["report"].strip()
    ]
    if empty:
        split, entry_id = empty[0]
        raise AnnotationError(
            f"Split '{split}', entry '{entry_id}': the report is empty ({len(empty) - 1} other entries have an empty report too)."
        )


def _check_images_exist(annotation, image_root):
    missing = [
        (split, entry["id"], path)
        for split, entries in annotation.items()
        for entry in entries
        for path in (os.path.abspath(image_root / relative) for relative in entry["image_path"])
        if not os.path.isfile(path)
    ]
    if missing:
        split, entry_id, path = missing[0]
        raise AnnotationError(
            f"Split '{split}', entry '{entry_id}': image file '{path}' does not exist "
            f"({len(missing) - 1} other image file(s) are missing too; image root '{image_root}')."
        )


def _extra_fields(split, entries):
    if not entries:
        return []
    counts = {}
    for entry in entries:
        for key in entry:
            if key not in _ENTRY_KEY_ORDER:
                counts[key] = counts.get(key, 0) + 1
    partial = sorted(key for key, count in counts.items() if count < len(entries))
    if partial:
        logger.warning(
            "Split '%s': field(s) %s are missing from some entries and are not dataset columns "
            "(they stay in the annotation file).",
            split,
            partial,
        )
    return sorted(key for key, count in counts.items() if count == len(entries))
