"""Phantom benchmarks written to disk: ``annotation.json`` plus PNGs rendered by :mod:`cxrgen.data.phantom`.

Layout of ``output_dir``: ``annotation.json`` (R2Gen format, every entry with ``labels``) and
``images/<id>/0.png`` (frontal), ``images/<id>/1.png`` (lateral); ``images/`` is the image root to pass to
:func:`cxrgen.data.annotation.annotation_to_dataset_dict`.

Sources:

- ``"iu"`` ("phantom-iu"): every study of :func:`cxrgen.data.iu_xray.convert_iu_xray` on the NLM archive keeps its
  real report, extra fields and split; its phantoms are rendered from the labels the project's labeler gives the
  report, which are stored as the entry's ``labels``.
- ``"synthetic"``: templated reports (one positive, negated or hedged sentence per sampled observation, in a shuffled
  order) for sampled label sets, split 70/10/20. The templates are chosen so that the labeler gives back exactly
  the sampled labels; "No Finding" follows the CheXpert rule (positive when nothing but Support Devices is
  positive or uncertain).
- ``"auto"``: ``"iu"`` when the archive is found, else ``"synthetic"``.

Each study's phantom seed is derived from ``seed`` and its id, so a study looks the same whatever subset is built.
"""

import logging
import os
import random
import zlib
from collections.abc import Sequence
from pathlib import Path

from cxrgen.data.annotation import SPLITS, write_annotation
from cxrgen.data.iu_xray import assign_splits, convert_iu_xray, find_nlm_reports_archive
from cxrgen.data.phantom import render_study
from cxrgen.labeler import label_reports
from cxrgen.labels import CHEXPERT_OBSERVATIONS, NEGATIVE, NOT_MENTIONED, POSITIVE, UNCERTAIN
from cxrgen.parallel import map_chunks, worker_count

logger = logging.getLogger(__name__)

SOURCES = ("auto", "iu", "synthetic")
ANNOTATION_NAME = "annotation.json"
IMAGES_DIR = "images"
# Per-observation code probabilities for synthetic studies: positive, uncertain, negative (rest: not mentioned).
_SYNTHETIC_RATES = (0.12, 0.04, 0.4)
# Sentences per observation and code. Each is labeled exactly as keyed by cxrgen.labeler (tested).
TEMPLATES = {
    "Enlarged Cardiomediastinum": {
        POSITIVE: ["The mediastinum is widened.", "There is mediastinal widening."],
        NEGATIVE: ["The mediastinum is not widened."],
        UNCERTAIN: ["Possible mediastinal widening."],
    },
    "Cardiomegaly": {
        POSITIVE: ["There is cardiomegaly.", "The heart is enlarged."],
        NEGATIVE: ["No cardiomegaly.", "The heart is not enlarged."],
        UNCERTAIN: ["Borderline heart size.", "Possible cardiomegaly."],
    },
    "Lung Opacity": {
        POSITIVE: ["There is a hazy opacity in the lung.", "Airspace opacity is present."],
        NEGATIVE: ["No focal opacity.", "There is no airspace opacity."],
        UNCERTAIN: ["Possible hazy opacity."],
    },
    "Lung Lesion": {
        POSITIVE: ["There is a pulmonary nodule.", "A lung mass is present."],
        NEGATIVE: ["No pulmonary nodules.", "No lung mass."],
        UNCERTAIN: ["Possible pulmonary nodule."],
    },
    "Edema": {
        POSITIVE: ["There is pulmonary edema.", "Bilateral perihilar edema is present."],
        NEGATIVE: ["No pulmonary edema.", "There is no edema."],
        UNCERTAIN: ["Mild edema is possible."],
    },
    "Consolidation": {
        POSITIVE: ["There is consolidation.", "Lobar consolidation is present."],
        NEGATIVE: ["No focal consolidation.", "There is no consolidation."],
        UNCERTAIN: ["Possible consolidation."],
    },
    "Pneumonia": {
        POSITIVE: ["Findings consistent with pneumonia.", "There is pneumonia."],
        NEGATIVE: ["No pneumonia."],
        UNCERTAIN: ["Pneumonia cannot be excluded.", "Possible pneumonia."],
    },
    "Atelectasis": {
        POSITIVE: ["There is basilar atelectasis.", "Atelectasis is present."],
        NEGATIVE: ["No atelectasis."],
        UNCERTAIN: ["Possible atelectasis.", "This may represent atelectasis."],
    },
    "Pneumothorax": {
        POSITIVE: ["There is a pneumothorax.", "A pneumothorax is present."],
        NEGATIVE: ["No pneumothorax.", "There is no pneumothorax."],
        UNCERTAIN: ["Possible small pneumothorax."],
    },
    "Pleural Effusion": {
        POSITIVE: ["There is a pleural effusion.", "A pleural effusion is present."],
        NEGATIVE: ["No pleural effusion.", "There is no pleural effusion."],
        UNCERTAIN: ["Possible small pleural effusion."],
    },
    "Pleural Other": {
        POSITIVE: ["There is pleural thickening.", "Pleural thickening is present."],
        NEGATIVE: ["No pleural thickening."],
        UNCERTAIN: ["Possible pleural thickening."],
    },
    "Fracture": {
        POSITIVE: ["There is a rib fracture.", "A rib fracture is present."],
        NEGATIVE: ["No fracture.", "No acute fracture."],
        UNCERTAIN: ["Possible rib fracture."],
    },
    "Support Devices": {
        POSITIVE: ["A pacemaker is present.", "An endotracheal tube is in place.", "A central line is in place."],
        NEGATIVE: ["No pacemaker.", "No tubes or lines."],
        UNCERTAIN: ["Possible catheter."],
    },
}
NORMAL_SENTENCE = "No acute cardiopulmonary abnormality."
# Rendering a 64 px study takes a few milliseconds (256 px: ~20 ms): a worker process pays off from this many.
MIN_STUDIES_PER_PROCESS = 200


def build_phantom_benchmark(
    output_dir: str | os.PathLike,
    source: str = "auto",
    image_size: int = 256,
    max_studies: int | None = None,
    seed: int = 0,
    synthetic_studies: int = 1000,
    reports_source: str | os.PathLike | None = None,
    processes: int | None = None,
) -> Path:
    """Render a phantom benchmark into ``output_dir`` and return the path of its ``annotation.json``.

    ``max_studies`` keeps that many studies at most, drawn per split in proportion to the split sizes
    (deterministically from ``seed``). ``synthetic_studies`` is the size of the synthetic set before that cut;
    ``reports_source`` is passed to :func:`cxrgen.data.iu_xray.convert_iu_xray` for the ``"iu"`` source.
    ``processes`` worker processes label and render (default: as many as the input size makes worth it, up to the
    available cores); every file is the same whatever their number.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}.")
    if max_studies is not None and (not isinstance(max_studies, int) or max_studies < 1):
        raise ValueError(f"max_studies must be a positive integer or None, got {max_studies!r}.")
    if source == "auto":
        source = "iu" if reports_source is not None or find_nlm_reports_archive() is not None else "synthetic"
    if source == "iu":
        annotation = _phantom_iu_annotation(reports_source, processes)
    else:
        annotation = synthetic_annotation(synthetic_studies, seed)
    if max_studies is not None:
        annotation = subsample(annotation, max_studies, seed)

    output_dir = Path(output_dir)
    studies = [(entry["id"], entry["labels"]) for entries in annotation.values() for entry in entries]
    workers = worker_count(len(studies), MIN_STUDIES_PER_PROCESS, processes)
    map_chunks(_render_studies, studies, (output_dir / IMAGES_DIR, seed, image_size), workers)
    path = write_annotation(annotation, output_dir / ANNOTATION_NAME)
    logger.info(
        "Phantom benchmark (%s, %d px): %s studies written to %s.",
        source,
        image_size,
        " / ".join(f"{name} {len(annotation[name])}" for name in SPLITS),
        output_dir,
    )
    return path


def _render_studies(studies, settings):
    """Render and save ``(id, labels)`` studies under the images folder (a worker's share of the benchmark)."""
    images_dir, seed, image_size = settings
    for study_id, labels in studies:
        views = render_study(labels, study_seed(seed, study_id), image_size=image_size)
        study_dir = images_dir / study_id
        study_dir.mkdir(parents=True, exist_ok=True)
        for index, image in enumerate(views):
            image.save(study_dir / f"{index}.png")
    return [None] * len(studies)


def _phantom_iu_annotation(reports_source, processes):
    # The recorded demo and benchmark results were measured on this seeded split; see benchmarks/DEMO.md.
    annotation = convert_iu_xray(reports_source, split="seeded", seed=42)
    labels = iter(
        label_reports([entry["report"] for entries in annotation.values() for entry in entries], processes=processes)
    )
    result = {}
    for split, entries in annotation.items():
        # The NLM image ids would point at real images that these phantoms are not.
        result[split] = [
            {**{key: value for key, value in entry.items() if key != "image_ids"}, "labels": next(labels)}
            for entry in entries
        ]
    return result


def synthetic_annotation(count: int, seed: int, split: tuple[float, float, float] = (0.7, 0.1, 0.2)) -> dict:
    """``count`` synthetic studies with sampled labels and templated reports, split 70/10/20 (deterministic)."""
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"synthetic_studies must be a positive integer, got {count!r}.")
    rng = random.Random(seed)
    studies = {}
    for index in range(count):
        labels = sample_labels(rng)
        studies[f"synthetic-{index:05d}"] = (templated_report(labels, rng), labels)
    assignment = assign_splits(list(studies), seed, split)
    annotation = {name: [] for name in SPLITS}
    for study_id, (report, labels) in studies.items():
        annotation[assignment[study_id]].append(
            {
                "id": study_id,
                "report": report,
                "image_path": [f"{study_id}/0.png", f"{study_id}/1.png"],
                "split": assignment[study_id],
                "labels": labels,
            }
        )
    return annotation


def sample_labels(rng: random.Random) -> list[int]:
    """A random 14-code label list; "No Finding" follows the CheXpert rule from the other 13 codes."""
    positive, uncertain, negative = _SYNTHETIC_RATES
    labels = []
    for name in CHEXPERT_OBSERVATIONS:
        if name == "No Finding":
            labels.append(NOT_MENTIONED)
            continue
        draw = rng.random()
        if draw < positive:
            labels.append(POSITIVE)
        elif draw < positive + uncertain:
            labels.append(UNCERTAIN)
        elif draw < positive + uncertain + negative:
            labels.append(NEGATIVE)
        else:
            labels.append(NOT_MENTIONED)
    abnormal = any(
        code in (POSITIVE, UNCERTAIN)
        for name, code in zip(CHEXPERT_OBSERVATIONS, labels)
        if name not in ("No Finding", "Support Devices")
    )
    labels[CHEXPERT_OBSERVATIONS.index("No Finding")] = NOT_MENTIONED if abnormal else POSITIVE
    return labels


def templated_report(labels: Sequence[int], rng: random.Random) -> str:
    """A report stating each mentioned observation with a template of its code, sentences in a random order."""
    sentences = [
        rng.choice(TEMPLATES[name][code])
        for name, code in zip(CHEXPERT_OBSERVATIONS, labels)
        if name in TEMPLATES and code != NOT_MENTIONED
    ]
    rng.shuffle(sentences)
    if labels[CHEXPERT_OBSERVATIONS.index("No Finding")] == POSITIVE:
        sentences.append(NORMAL_SENTENCE)
    return " ".join(sentences)


def subsample(annotation: dict, max_studies: int, seed: int) -> dict:
    """At most ``max_studies`` entries, each split's share proportional to its size (largest remainder)."""
    total = sum(len(entries) for entries in annotation.values())
    if total <= max_studies:
        return annotation
    shares = {split: max_studies * len(entries) / total for split, entries in annotation.items()}
    quotas = {split: int(share) for split, share in shares.items()}
    leftover = max_studies - sum(quotas.values())
    for split in sorted(shares, key=lambda name: (quotas[name] - shares[name], SPLITS.index(name)))[:leftover]:
        quotas[split] += 1
    rng = random.Random(seed)
    result = {}
    for split, entries in annotation.items():
        keep = set(rng.sample(range(len(entries)), quotas[split]))
        result[split] = [entry for index, entry in enumerate(entries) if index in keep]
    return result


def study_seed(seed: int, study_id: str) -> int:
    """The phantom seed of a study: derived from the benchmark seed and the study id only."""
    return zlib.crc32(f"{seed}:{study_id}".encode())
