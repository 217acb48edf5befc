"""IU-Xray (Indiana University chest X-ray collection) to an R2Gen annotation, from the official NLM report archive.

Selection follows R2Gen's IU-Xray set: a study is kept when its FINDINGS section is non-empty after stripping
whitespace and its report XML lists at least two images (``parentImage`` elements). On the official
``NLMCXR_reports.tgz`` (3,955 reports) this keeps exactly R2Gen's 2,955 studies: 530 reports have an empty
FINDINGS section and, of the rest, 470 list fewer than two images.

- ``report`` is the FINDINGS text with runs of whitespace collapsed (cleaning happens later, see
  :mod:`cxrgen.processing.cleaning`); ``impression``, ``indication`` and ``comparison`` (``""`` when empty),
  ``mesh_major`` and ``mesh_automatic`` (MeSH tags, in XML order) and ``image_ids`` (the two NLM image ids used)
  are kept as extra fields.
- ``id`` is the first image id without its last dash-separated part (``CXR2384_IM-0942-1001`` ->
  ``CXR2384_IM-0942``, ``CXR1032_IM-0026-1001-0001`` -> ``CXR1032_IM-0026-1001``), which is how R2Gen names its
  IU-Xray studies: on the official archive every id equals R2Gen's.
- Views: the report XML carries no per-image view (the caption describes the whole study, e.g. "Xray Chest PA and
  Lateral"), and the DICOM ``View Position`` metadata distributed beside the archive is missing for a third of the
  images and calls many laterals "PA". So by default the first two images in XML order are used, as in R2Gen;
  pass ``projections`` (NLM image id -> ``"frontal"``/``"lateral"``, e.g. from a projection table) to put the
  frontal view first.
- Split: ``"r2gen"`` (the default) is R2Gen's own assignment, the split every IU-Xray paper reports on: the study
  ids per split (2,069 / 296 / 590) taken from R2Gen's public annotation file, shipped as
  ``iu_xray_r2gen_split.json``; a selected study missing from it is an error. ``"seeded"`` sorts the study ids,
  shuffles them with ``random.Random(seed)`` and cuts them into train/val/test with ``round(0.7 n)`` and
  ``round(0.1 n)`` studies (halves rounded up) and the rest, the same sizes with another membership.
"""

import importlib.util
import json
import logging
import math
import random
import re
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from pathlib import Path

from cxrgen.data.annotation import SPLITS

logger = logging.getLogger(__name__)

ARCHIVE_NAME = "NLMCXR_reports.tgz"
DEFAULT_SEED = 42
SPLIT_MODES = ("r2gen", "seeded")
R2GEN_SPLIT_FILE = Path(__file__).with_name("iu_xray_r2gen_split.json")
_IMAGE_ID = re.compile(r"^CXR\S*_IM-\d+(?:-\d+)+$")
_VIEW_RANK = {"frontal": 0, "lateral": 1}


class IUXrayError(ValueError):
    """Malformed or inconsistent IU-Xray input."""


def find_nlm_reports_archive() -> Path | None:
    """The ``NLMCXR_reports.tgz`` shipped in the installed ``torchxrayvision`` package, or ``None``.

    The package is located without being imported: importing it requires torchvision, which is not installed.
    """
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "data" / ARCHIVE_NAME
        if candidate.is_file():
            return candidate
    return None


def read_nlm_reports(source: str | Path) -> list[dict]:
    """Parse every report XML of an NLM archive (``.tgz``) or folder into a list of study dicts, sorted by file name.

    Each dict has ``file``, ``uid``, ``findings``, ``impression``, ``indication``, ``comparison``, ``mesh_major``,
    ``mesh_automatic`` and ``image_ids`` (in XML order).
    """
    source = Path(source)
    studies = []
    if source.is_dir():
        files = sorted(source.rglob("*.xml"))
        for path in files:
            studies.append(_parse_report(path.read_bytes(), str(path)))
    elif source.is_file():
        try:
            with tarfile.open(source, "r:*") as archive:
                members = sorted(
                    (m for m in archive.getmembers() if m.isfile() and m.name.endswith(".xml")), key=lambda m: m.name
                )
                for member in members:
                    studies.append(_parse_report(archive.extractfile(member).read(), f"{source}:{member.name}"))
        except tarfile.TarError as error:
            raise IUXrayError(f"{source}: not a readable tar archive of NLM report XMLs ({error}).") from error
    else:
        raise IUXrayError(
            f"{source}: no such file or folder (expected {ARCHIVE_NAME} or its extracted folder of XMLs)."
        )
    if not studies:
        raise IUXrayError(f"{source}: contains no report XML files.")
    return studies


def _parse_report(data, name):
    try:
        root = ET.fromstring(data)
    except ET.ParseError as error:
        line, column = error.position
        raise IUXrayError(f"{name}: malformed XML at line {line}, column {column} ({error}).") from error
    uid = root.find("uId")
    if uid is None or not uid.get("id"):
        raise IUXrayError(f"{name}: missing <uId id=...>; not an NLM report XML.")
    sections = {}
    for node in root.iter("AbstractText"):
        label = (node.get("Label") or "").lower()
        if label in sections:
            raise IUXrayError(f"{name}: the section {label.upper()} appears twice.")
        sections[label] = " ".join("".join(node.itertext()).split())
    if "findings" not in sections:
        raise IUXrayError(f'{name}: no <AbstractText Label="FINDINGS"> element.')
    image_ids = []
    for image in root.findall("parentImage"):
        if not image.get("id"):
            raise IUXrayError(f"{name}: a <parentImage> has no id attribute.")
        image_ids.append(image.get("id"))
    return {
        "file": name,
        "uid": uid.get("id"),
        "findings": sections["findings"],
        "impression": sections.get("impression", ""),
        "indication": sections.get("indication", ""),
        "comparison": sections.get("comparison", ""),
        "mesh_major": [node.text.strip() for node in root.findall("MeSH/major") if node.text and node.text.strip()],
        "mesh_automatic": [
            node.text.strip() for node in root.findall("MeSH/automatic") if node.text and node.text.strip()
        ],
        "image_ids": image_ids,
    }


def split_sizes(count: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    """Train/val/test sizes: train and val are ``fraction * count`` rounded half up, test takes the rest."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise ValueError(f"split must be three non-negative fractions summing to 1, got {fractions!r}.")
    train = math.floor(fractions[0] * count + 0.5)
    val = min(math.floor(fractions[1] * count + 0.5), count - train)
    return train, val, count - train - val


def assign_splits(ids: Iterable[str], seed: int, fractions: Sequence[float]) -> dict[str, str]:
    """Deterministically map each id to a split: sort, shuffle with ``random.Random(seed)``, cut by :func:`split_sizes`."""
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    train, val, _ = split_sizes(len(order), fractions)
    bounds = {"train": (0, train), "val": (train, train + val), "test": (train + val, len(order))}
    return {study_id: split for split, (start, end) in bounds.items() for study_id in order[start:end]}


def r2gen_split() -> dict[str, str]:
    """R2Gen's IU-Xray split: study id -> ``"train"`` / ``"val"`` / ``"test"`` (2,069 / 296 / 590 studies)."""
    ids = json.loads(R2GEN_SPLIT_FILE.read_text(encoding="utf-8"))
    return {study_id: split for split in SPLITS for study_id in ids[split]}


def r2gen_study_id(image_id: str) -> str:
    """R2Gen's study id of an NLM image id: the id without its last dash-separated part."""
    if _IMAGE_ID.match(image_id) is None:
        raise ValueError(f"image id '{image_id}' does not look like 'CXR<n>_IM-<n>-<n>[-<n>...]'")
    return image_id.rsplit("-", 1)[0]


def convert_iu_xray(
    reports_source: str | Path | None = None,
    images_dir: str | Path | None = None,
    split: str = "r2gen",
    seed: int = DEFAULT_SEED,
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
    projections: dict[str, str] | None = None,
) -> dict[str, list[dict]]:
    """Build the R2Gen IU-Xray annotation (see the module docstring for the exact protocol).

    ``reports_source``: ``NLMCXR_reports.tgz`` or its extracted folder; ``None`` uses the archive shipped in
    torchxrayvision. ``images_dir``: the NLM PNG folder (``CXR2384_IM-0942-1001.png``, ...); when given, image paths
    point at those files (relative to it) and must exist, else they are R2Gen's ``<id>/0.png``, ``<id>/1.png``.
    ``split``: ``"r2gen"`` (R2Gen's assignment) or ``"seeded"`` (``seed`` and ``fractions``, see
    :func:`assign_splits`). ``projections``: optional NLM image id -> ``"frontal"``/``"lateral"`` used to order
    the views.
    """
    if split not in SPLIT_MODES:
        raise ValueError(f"split must be one of {SPLIT_MODES}, got {split!r}.")
    if reports_source is None:
        reports_source = find_nlm_reports_archive()
        if reports_source is None:
            raise IUXrayError(
                f"No reports_source given and {ARCHIVE_NAME} was not found; install it with "
                "`pip install --no-deps torchxrayvision` or pass the archive / extracted folder."
            )
    studies = read_nlm_reports(reports_source)
    no_findings = [s for s in studies if not s["findings"]]
    too_few_images = [s for s in studies if s["findings"] and len(s["image_ids"]) < 2]
    selected = [s for s in studies if s["findings"] and len(s["image_ids"]) >= 2]

    entries = {}
    for study in selected:
        image_ids = _ordered_views(study, projections)[:2]
        try:
            identifier = r2gen_study_id(image_ids[0])
        except ValueError as error:
            raise IUXrayError(f"{study['file']}: {error}.") from None
        if identifier in entries:
            raise IUXrayError(
                f"{study['file']}: study id '{identifier}' is also derived from {entries[identifier]['file']}."
            )
        entries[identifier] = dict(study, id=identifier, image_ids=image_ids)

    if images_dir is not None:
        _check_png_folder(Path(images_dir), entries)
    if split == "seeded":
        assignment = assign_splits(list(entries), seed, fractions)
    else:
        assignment = r2gen_split()
        unknown = sorted((i for i in entries if i not in assignment), key=_natural_key)
        if unknown:
            raise IUXrayError(
                f"{len(unknown)} selected studies are not in R2Gen's IU-Xray split (e.g. {', '.join(unknown[:3])}): "
                f"{reports_source} is not the official NLM report archive; pass split='seeded' to split it by seed."
            )
    annotation = {name: [] for name in SPLITS}
    for identifier in sorted(entries, key=_natural_key):
        study = entries[identifier]
        if images_dir is None:
            image_path = [f"{identifier}/{view}.png" for view in range(2)]
        else:
            image_path = [f"{image_id}.png" for image_id in study["image_ids"]]
        annotation[assignment[identifier]].append(
            {
                "id": identifier,
                "report": study["findings"],
                "image_path": image_path,
                "split": assignment[identifier],
                "impression": study["impression"],
                "indication": study["indication"],
                "comparison": study["comparison"],
                "mesh_major": study["mesh_major"],
                "mesh_automatic": study["mesh_automatic"],
                "image_ids": study["image_ids"],
            }
        )
    logger.info(
        "IU-Xray: %d reports read, %d kept (%s split: train %d / val %d / test %d); excluded %d with an empty "
        "FINDINGS section and %d with fewer than two images.",
        len(studies),
        len(selected),
        split,
        *(len(annotation[name]) for name in SPLITS),
        len(no_findings),
        len(too_few_images),
    )
    return annotation


def _ordered_views(study, projections):
    if projections is None:
        return study["image_ids"]
    ranks = []
    for image_id in study["image_ids"]:
        view = projections.get(image_id)
        if view is None or view.lower() not in _VIEW_RANK:
            raise IUXrayError(
                f"{study['file']}: projections give {view!r} for image '{image_id}'; expected 'frontal' or 'lateral'."
            )
        ranks.append(_VIEW_RANK[view.lower()])
    return [image_id for _, image_id in sorted(zip(ranks, study["image_ids"]), key=lambda pair: pair[0])]


def _check_png_folder(images_dir, entries):
    if not images_dir.is_dir():
        raise IUXrayError(f"images_dir '{images_dir}' is not a folder (expected the NLM PNG folder).")
    missing = [
        (study_id, images_dir / f"{image_id}.png")
        for study_id, study in entries.items()
        for image_id in study["image_ids"]
        if not (images_dir / f"{image_id}.png").is_file()
    ]
    if missing:
        study_id, path = missing[0]
        raise IUXrayError(
            f"Study '{study_id}': image '{path}' does not exist ({len(missing) - 1} other image(s) missing too)."
        )


def _natural_key(text):
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]
