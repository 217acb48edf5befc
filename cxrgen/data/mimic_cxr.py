"""MIMIC-CXR to an R2Gen annotation, from the official MIMIC-CXR-JPG files.

Inputs under ``root`` (each CSV plain or gzipped):

- ``mimic-cxr-2.0.0-split.csv``: ``dicom_id, study_id, subject_id, split`` (train / validate / test);
- ``mimic-cxr-2.0.0-metadata.csv``: ``dicom_id, ..., ViewPosition, ...``;
- ``mimic-cxr-2.0.0-chexpert.csv``: ``subject_id, study_id`` and the 14 CheXpert observations
  (``1.0`` positive, ``0.0`` negative, ``-1.0`` uncertain, blank not mentioned);
- the free-text reports ``files/pXX/pXXXXXXXX/sXXXXXXXX.txt`` (under ``reports_root``, default ``root``; they come
  from the MIMIC-CXR database, not the JPG one).

Protocol (R2Gen's MIMIC-CXR): ``report`` is the FINDINGS section, and studies without one are excluded and
counted. Sections are found at lines starting with an upper-case header and a colon (``FINDINGS:``). Header
names follow the official MIMIC-CXR section parser's normalisation for the two sections used here: ``FINDING``
counts as findings; ``CONCLUSION``, ``IMPRESSIONS`` and the combined ``FINDINGS AND IMPRESSION`` /
``FINDINGS/IMPRESSION`` count as impression; when a report has several non-empty sections of one kind the last is
used. Whitespace runs are collapsed; cleaning happens later. Only frontal images (``ViewPosition`` PA or AP) are
used: by default one per study (PA before AP, then the smallest dicom id), with ``all_frontal_images=True`` one
entry per frontal image (the same report repeated, as in R2Gen's file). Studies without a frontal image are
excluded and counted.

Entries: ``id`` (dicom id), ``report``, ``image_path`` (``files/pXX/pXXXXXXXX/sXXXXXXXX/<dicom>.jpg``, relative to
the MIMIC-CXR-JPG root), ``split`` (``validate`` becomes ``val``), ``study_id``, ``subject_id``, ``view_position``,
``impression`` (``""`` when absent) and ``labels`` (the official CheXpert labels as mention codes). A study with no
row in the CheXpert file gets no ``labels`` field (counted), so :func:`cxrgen.data.annotation.annotation_to_dataset_dict`
labels its report with the project's labeler instead.
"""

import csv
import gzip
import logging
import os
import re
from pathlib import Path

from cxrgen.data.annotation import SPLITS
from cxrgen.labels import CHEXPERT_OBSERVATIONS, NEGATIVE, NOT_MENTIONED, POSITIVE, UNCERTAIN

logger = logging.getLogger(__name__)

SPLIT_FILE = "mimic-cxr-2.0.0-split.csv"
METADATA_FILE = "mimic-cxr-2.0.0-metadata.csv"
CHEXPERT_FILE = "mimic-cxr-2.0.0-chexpert.csv"
FRONTAL_VIEWS = ("PA", "AP")
_SPLIT_NAMES = {"train": "train", "validate": "val", "test": "test"}
_CHEXPERT_CODES = {"1.0": POSITIVE, "0.0": NEGATIVE, "-1.0": UNCERTAIN, "": NOT_MENTIONED}
_SECTION_HEADER = re.compile(r"^[ \t]*([A-Z][A-Z ()/,&-]*?)[ \t]*:", re.MULTILINE)
_SECTION_KINDS = {
    "findings": "findings",
    "finding": "findings",
    "impression": "impression",
    "impressions": "impression",
    "conclusion": "impression",
    "findings and impression": "impression",
    "findings/impression": "impression",
}


class MimicCxrError(ValueError):
    """Malformed or inconsistent MIMIC-CXR input."""


def extract_sections(text: str) -> dict[str, str]:
    """The ``findings`` and ``impression`` sections of a MIMIC-CXR free-text report (``""`` when absent)."""
    headers = list(_SECTION_HEADER.finditer(text))
    found = {"findings": "", "impression": ""}
    for index, header in enumerate(headers):
        kind = _SECTION_KINDS.get(" ".join(header.group(1).lower().split()))
        if kind is None:
            continue
        end = headers[index + 1].start() if index + 1 < len(headers) else len(text)
        body = " ".join(text[header.end() : end].split())
        if body:
            found[kind] = body
    return found


def convert_mimic_cxr(
    root: str | os.PathLike, reports_root: str | os.PathLike | None = None, all_frontal_images: bool = False
) -> dict:
    """Build the R2Gen-style MIMIC-CXR annotation from the MIMIC-CXR-JPG files (protocol in the module docstring)."""
    root = Path(root)
    reports_root = root if reports_root is None else Path(reports_root)
    dicoms = _read_split(_find_csv(root, SPLIT_FILE))
    views = _read_views(_find_csv(root, METADATA_FILE))
    chexpert = _read_chexpert(_find_csv(root, CHEXPERT_FILE))

    missing_metadata = sorted(set(dicoms) - set(views))
    if missing_metadata:
        raise MimicCxrError(
            f"{METADATA_FILE}: no row for dicom '{missing_metadata[0]}' of the split file "
            f"({len(missing_metadata) - 1} other dicom(s) missing too)."
        )
    studies = {}
    for dicom_id, (study_id, subject_id, split) in dicoms.items():
        study = studies.setdefault(study_id, {"subject_id": subject_id, "split": split, "dicoms": []})
        if study["split"] != split or study["subject_id"] != subject_id:
            raise MimicCxrError(f"{SPLIT_FILE}: study {study_id} has images with different splits or subjects.")
        study["dicoms"].append(dicom_id)

    annotation = {name: [] for name in SPLITS}
    missing_reports, no_findings, no_frontal, no_labels = [], 0, 0, 0
    for study_id, study in sorted(studies.items(), key=lambda item: (item[1]["subject_id"], item[0])):
        subject = str(study["subject_id"])
        study_dir = f"files/p{subject[:2]}/p{subject}/s{study_id}"
        report_path = reports_root / f"{study_dir}.txt"
        try:
            sections = extract_sections(report_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            missing_reports.append(report_path)
            continue
        if not sections["findings"]:
            no_findings += 1
            continue
        frontal = sorted((FRONTAL_VIEWS.index(views[d]), d) for d in study["dicoms"] if views[d] in FRONTAL_VIEWS)
        if not frontal:
            no_frontal += 1
            continue
        labels = chexpert.get(study_id)
        no_labels += labels is None
        for _, dicom_id in frontal if all_frontal_images else frontal[:1]:
            entry = {
                "id": dicom_id,
                "report": sections["findings"],
                "image_path": [f"{study_dir}/{dicom_id}.jpg"],
                "split": study["split"],
                "study_id": study_id,
                "subject_id": study["subject_id"],
                "view_position": views[dicom_id],
                "impression": sections["impression"],
            }
            if labels is not None:
                entry["labels"] = labels
            annotation[study["split"]].append(entry)
    if missing_reports:
        raise MimicCxrError(
            f"Report file '{missing_reports[0]}' does not exist ({len(missing_reports) - 1} other report(s) missing "
            f"too); pass reports_root= the folder holding the MIMIC-CXR 'files/' reports."
        )
    logger.info(
        "MIMIC-CXR: %d studies, kept %d entries (train %d / val %d / test %d); excluded %d studies without a "
        "FINDINGS section and %d without a frontal image; %d kept studies have no CheXpert row.",
        len(studies),
        sum(len(entries) for entries in annotation.values()),
        *(len(annotation[name]) for name in SPLITS),
        no_findings,
        no_frontal,
        no_labels,
    )
    return annotation


def _find_csv(root, name):
    for candidate in (root / f"{name}.gz", root / name):
        if candidate.is_file():
            return candidate
    raise MimicCxrError(f"Neither {name}.gz nor {name} found in '{root}'.")


def _rows(path, required):
    """Yield (line number, row) of a plain or gzipped CSV after checking that its header has ``required``."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as stream:
            reader = csv.DictReader(stream)
            header = reader.fieldnames or []
            for column in required:
                if column not in header:
                    raise MimicCxrError(f"{path}: missing column '{column}' (header: {header}).")
            for row in reader:
                yield reader.line_num, row
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as error:
        raise MimicCxrError(f"{path}: unreadable CSV ({error}).") from error


def _integer(path, line, row, column):
    value = (row[column] or "").strip()
    if not value.isdigit():
        raise MimicCxrError(f"{path}, line {line}: column '{column}' must be an integer id, got {value!r}.")
    return int(value)


def _read_split(path):
    dicoms = {}
    for line, row in _rows(path, ("dicom_id", "study_id", "subject_id", "split")):
        split = _SPLIT_NAMES.get(row["split"])
        if split is None:
            raise MimicCxrError(
                f"{path}, line {line}: column 'split' is {row['split']!r}; expected one of {list(_SPLIT_NAMES)}."
            )
        dicoms[row["dicom_id"]] = (
            _integer(path, line, row, "study_id"),
            _integer(path, line, row, "subject_id"),
            split,
        )
    return dicoms


def _read_views(path):
    return {
        row["dicom_id"]: (row["ViewPosition"] or "").strip() for _, row in _rows(path, ("dicom_id", "ViewPosition"))
    }


def _read_chexpert(path):
    labels = {}
    for line, row in _rows(path, ("subject_id", "study_id", *CHEXPERT_OBSERVATIONS)):
        codes = []
        for observation in CHEXPERT_OBSERVATIONS:
            value = (row[observation] or "").strip()
            if value not in _CHEXPERT_CODES:
                raise MimicCxrError(
                    f"{path}, line {line}: column '{observation}' is {value!r}; expected 1.0, 0.0, -1.0 or blank."
                )
            codes.append(_CHEXPERT_CODES[value])
        labels[_integer(path, line, row, "study_id")] = codes
    return labels
