"""Reference baselines every trained model is compared with: the most frequent training report, and
nearest-neighbour retrieval of a training report by image pixels."""

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
