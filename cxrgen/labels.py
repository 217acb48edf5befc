"""The 14 CheXpert observations and the four-way mention codes shared by data, labeler and metrics.

Codes follow the CheXbert class convention (0 = blank / not mentioned, 1 = positive, 2 = negative,
3 = uncertain) so that label lists are plain non-negative integers that `datasets` stores as `int8`.
"""

from collections.abc import Iterable

CHEXPERT_OBSERVATIONS = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
NUM_OBSERVATIONS = len(CHEXPERT_OBSERVATIONS)

NOT_MENTIONED = 0
POSITIVE = 1
NEGATIVE = 2
UNCERTAIN = 3
MENTION_NAMES = {NOT_MENTIONED: "not mentioned", POSITIVE: "positive", NEGATIVE: "negative", UNCERTAIN: "uncertain"}


def binarize(labels: Iterable[int]) -> list[int]:
    """Map four-way codes to the binary targets clinical-efficacy metrics use: positive -> 1, anything else -> 0.

    This is the R2Gen ``compute_ce.py`` convention (blank -> 0, uncertain -> 0) that CMCRL's author describes.
    """
    return [1 if code == POSITIVE else 0 for code in labels]
