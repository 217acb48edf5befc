"""Checks of an annotation's images and studies that run before any work starts.

A corrupt image found by the data loader in the middle of training stops the run hours in (or never, when the study
is not drawn) with a traceback that names neither the study nor the file. :func:`check_images` decodes every image
up front with the reader that training and inference use (:func:`~cxrgen.processing.image_processing_cxr.load_image`)
and raises one error listing every bad file; :func:`check_views_per_study` does the same for studies with more views
than a model takes.
"""

import json
import logging
import os
import tempfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm.auto import tqdm

from cxrgen.processing.image_processing_cxr import ImageLoadError, load_image

logger = logging.getLogger(__name__)

SKIP_IMAGE_CHECK_HINT = "--skip-image-check (or skip_image_check=True) skips this check for data validated before"


class ImageCheckError(ValueError):
    """Images of an annotation that cannot be read. ``problems`` holds ``(split, entry id, path, reason)`` tuples."""

    def __init__(self, message: str, problems: list[tuple[str, str, str, str]]):
        super().__init__(message)
        self.problems = problems


def image_paths(annotation: dict, image_root: str | os.PathLike, splits: Iterable[str] | None = None) -> dict:
    """``{absolute path: [(split, entry id), ...]}`` of every image of ``splits`` (default: all) of an annotation."""
    image_root = Path(image_root)
    users = {}
    for split in annotation if splits is None else splits:
        for entry in annotation.get(split, []):
            for relative in entry["image_path"]:
                users.setdefault(os.path.abspath(image_root / relative), []).append((split, entry["id"]))
    return users


def check_images(
    annotation: dict,
    image_root: str | os.PathLike,
    splits: Iterable[str] | None = None,
    num_workers: int | None = None,
    cache: str | os.PathLike | None = None,
) -> int:
    """Decode every image of ``splits`` (default: all) of an annotation, header and pixels, as training reads it.

    Images are read in parallel threads with a progress bar (shown on a terminal). Every file is tried, then one
    :class:`ImageCheckError` lists each bad one (missing, empty, truncated, not an image) with its split, entry id,
    path and reason, and how many there are.

    Args:
        annotation: a validated annotation object (:func:`cxrgen.data.annotation.validate_annotation`).
        image_root: the folder its ``image_path`` entries are relative to.
        splits: the splits to check; ``None`` checks every split of the annotation.
        num_workers: reader threads (default: ``min(32, CPU count + 4)``, as ``ThreadPoolExecutor``).
        cache: a JSON file remembering the files that passed, by path, size and modification time, so that a
            later check reads only new or changed files. Created when missing; ``None`` keeps no cache.

    Returns:
        The number of image files checked.
    """
    users = image_paths(annotation, image_root, splits)
    checked = _read_cache(cache)
    signatures = {path: _signature(path) for path in users}
    pending = [path for path in users if signatures[path] is None or checked.get(path) != signatures[path]]
    with ThreadPoolExecutor(max_workers=num_workers) as pool:
        reasons = list(
            tqdm(
                pool.map(_problem, pending),
                total=len(pending),
                desc="Checking images",
                unit="image",
                disable=None if pending else True,
            )
        )
    problems = [
        (split, entry_id, path, reason)
        for path, reason in zip(pending, reasons)
        if reason is not None
        for split, entry_id in users[path]
    ]
    if cache is not None:
        bad = {path for _, _, path, _ in problems}
        checked.update({path: signatures[path] for path in pending if path not in bad})
        _write_cache(cache, checked)
    if problems:
        lines = [
            f"  split '{split}', entry '{entry_id}': {path}: {reason}" for split, entry_id, path, reason in problems
        ]
        files = len({path for _, _, path, _ in problems})
        raise ImageCheckError(
            f"{files} of {len(users)} image file(s) cannot be read (image root '{image_root}'), used by "
            f"{len(problems)} view(s):\n" + "\n".join(lines) + f"\nReplace or remove them; {SKIP_IMAGE_CHECK_HINT}.",
            problems,
        )
    return len(users)


def _problem(path: str) -> str | None:
    """Why ``path`` cannot be read, or None when it can."""
    try:
        load_image(path)
    except ImageLoadError as error:
        if not os.path.isfile(path):
            return "the file does not exist"
        if os.path.getsize(path) == 0:
            return "the file is empty (0 bytes)"
        cause = error.__cause__
        return str(error) if cause is None else f"not a readable image ({type(cause).__name__}: {cause})"
    return None


def _signature(path: str) -> list[int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def _read_cache(cache: str | os.PathLike | None) -> dict:
    if cache is None or not Path(cache).is_file():
        return {}
    try:
        checked = json.loads(Path(cache).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        # The cache only saves time: an unreadable one means checking every file again, which is still correct.
        logger.warning("Image check cache %s is unreadable (%s); checking every image again.", cache, error)
        return {}
    return checked if isinstance(checked, dict) else {}


def _write_cache(cache: str | os.PathLike, checked: dict) -> None:
    cache = Path(cache)
    cache.parent.mkdir(parents=True, exist_ok=True)
    # Written to a temporary name and renamed, so an interrupted run never leaves half a cache behind.
    handle, temporary = tempfile.mkstemp(dir=cache.parent, prefix=cache.name, suffix=".tmp")
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        json.dump(checked, stream)
    os.replace(temporary, cache)


def log_skipped_image_check(image_root: str | os.PathLike) -> None:
    """Say, in the log, that the images under ``image_root`` are used without being decode-checked."""
    logger.warning(
        "Image check skipped (skip_image_check / --skip-image-check): the images under %s are not decode-checked; "
        "an unreadable one fails when it is first loaded.",
        image_root,
    )


def check_views_per_study(annotation: dict, max_views: int, splits: Iterable[str] | None = None) -> None:
    """Raise ``ValueError`` listing every study of ``splits`` (default: all) with more than ``max_views``
    images, by split, id and files; call it before training a model that takes at most ``max_views`` views."""
    if max_views < 1:
        raise ValueError(f"max_views must be a positive integer, got {max_views}.")
    too_many = [
        f"  split '{split}', study '{entry['id']}' has {len(entry['image_path'])} views "
        f"(files {', '.join(entry['image_path'])})"
        for split in (annotation if splits is None else splits)
        for entry in annotation.get(split, [])
        if len(entry["image_path"]) > max_views
    ]
    if too_many:
        raise ValueError(
            f"{len(too_many)} study(ies) have more than {max_views} view(s), the most the model takes (num_views):\n"
            + "\n".join(too_many)
            + "\nDrop the extra views from the annotation or train a model with more num_views."
        )


__all__ = ["ImageCheckError", "check_images", "check_views_per_study", "image_paths", "log_skipped_image_check"]
