"""Reference baselines every trained model is compared with: the most frequent training report, and
nearest-neighbour retrieval of a training report by image pixels; and label retrieval (the training report whose
labels match given labels best), which gives the quality benchmark its label oracle and its classifier + retrieval
pipeline."""

from collections import Counter

import numpy as np
from PIL import Image

from cxrgen.processing.image_processing_cxr import load_image

THUMBNAIL_SIZE = 32


def most_frequent_report(train_reports: list[str]) -> str:
    """The training report that occurs most often (ties broken by first occurrence)."""
    counts = Counter(train_reports)
    if not counts:
        raise ValueError("most_frequent_report needs at least one training report.")
    return counts.most_common(1)[0][0]


def study_pixel_features(study_images: list, size: int = THUMBNAIL_SIZE) -> np.ndarray:
    """A study's pixel descriptor: each view as a grayscale ``size``x``size`` thumbnail, standardised, concatenated.

    Views are paths, PIL images or arrays, read with :func:`~cxrgen.processing.image_processing_cxr.load_image` as the
    models read them. Views are compared position by position (frontal with frontal), so every study must have the
    same view count.
    """
    views = []
    for image in study_images:
        pixels = np.asarray(
            load_image(image).convert("L").resize((size, size), Image.BILINEAR), dtype=np.float32
        ).ravel()
        views.append((pixels - pixels.mean()) / (pixels.std() + 1e-6))
    return np.concatenate(views)


def nearest_neighbour_reports(
    train_studies: list[list], train_reports: list[str], query_studies: list[list], size: int = THUMBNAIL_SIZE
) -> list[str]:
    """For each query study, the report of the training study whose pixels are closest (cosine similarity)."""
    if len(train_studies) != len(train_reports):
        raise ValueError(f"{len(train_studies)} training studies but {len(train_reports)} training reports.")
    if not train_studies:
        raise ValueError("nearest_neighbour_reports needs at least one training study.")
    train = _stack_features(train_studies, size, "training")
    query = _stack_features(query_studies, size, "query")
    if train.shape[1] != query.shape[1]:
        raise ValueError("Query studies must have as many views as the training studies.")
    nearest = (query @ train.T).argmax(axis=1)
    return [train_reports[index] for index in nearest]


def _stack_features(studies, size, kind):
    features = [study_pixel_features(study, size) for study in studies]
    lengths = {len(feature) for feature in features}
    if len(lengths) > 1:
        raise ValueError(f"All {kind} studies must have the same number of views.")
    matrix = np.stack(features)
    return matrix / (np.linalg.norm(matrix, axis=1, keepdims=True) + 1e-6)


def label_retrieval_reports(train_labels: np.ndarray, train_reports: list[str], query_labels: np.ndarray) -> list[str]:
    """For each query row of 14 booleans (positive observations), a training report whose positives match best:
    fewest observations that differ; among those, the report text written most often for them (then the first).

    ``train_labels`` (studies, 14) are the training reports' own positives, so a query whose combination occurs in
    training gets a report of exactly that combination."""
    train_labels = np.asarray(train_labels, dtype=bool)
    query_labels = np.asarray(query_labels, dtype=bool)
    if len(train_labels) != len(train_reports) or not train_reports:
        raise ValueError(f"{len(train_labels)} training label rows for {len(train_reports)} training reports.")
    if query_labels.ndim != 2 or query_labels.shape[1] != train_labels.shape[1]:
        raise ValueError(f"query labels of shape {query_labels.shape}, expected (studies, {train_labels.shape[1]}).")
    combinations, inverse = np.unique(train_labels, axis=0, return_inverse=True)
    best_report = []
    for index in range(len(combinations)):
        texts = [train_reports[i] for i in np.flatnonzero(inverse.ravel() == index)]
        best_report.append(Counter(texts).most_common(1)[0][0])
    distances = (query_labels[:, None, :] != combinations[None, :, :]).sum(-1)
    counts = np.bincount(inverse.ravel(), minlength=len(combinations))
    # fewest differences first, then the combination with most training studies
    order = np.lexsort((-counts[None, :].repeat(len(query_labels), 0), distances), axis=-1)
    return [best_report[row[0]] for row in order]
