"""What a method's perception sees: per-observation probabilities of a study from the classifier inside the method.

* CMCRL: the vision backbone trained as a 14-observation image classifier (``cxrgen train backbone``; an
  ``AutoModelForImageClassification`` folder); a study's probability is the mean over its views of each view's.
* TRRG: the stage-1 zero-shot disease head (``cxrgen train trrg-contrastive``), the probabilities the stage-2 clues
  are built from.

Scored with per-observation AUROC against the studies' labels, and turned into labels with per-observation
thresholds chosen on another split (:func:`f1_thresholds`) for the classifier + retrieval reference pipeline.
"""

import os
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from transformers import AutoModel, AutoModelForImageClassification, AutoProcessor

from cxrgen.labels import CHEXPERT_OBSERVATIONS, POSITIVE
from cxrgen.modeling import read_model_config
from cxrgen.processing.image_processing_cxr import load_image

TRRG_STAGE1_TYPE = "trrg_contrastive"


@torch.no_grad()
def study_probabilities(
    folder: str | os.PathLike, studies: Sequence[Sequence[str | os.PathLike]], batch_size: int = 64
) -> np.ndarray:
    """(studies, 14) probabilities of each observation from a classifier folder (see the module docstring);
    ``studies`` are each study's image paths."""
    model_type = read_model_config(folder).get("model_type")
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    image_processor = getattr(processor, "image_processor", processor)
    if model_type == TRRG_STAGE1_TYPE:
        model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
        prompt_embeds = model.encode_disease_prompts(processor.tokenizer)

        def predict(batch: list[list]) -> torch.Tensor:
            inputs = image_processor(batch, return_tensors="pt")
            return model.zero_shot(
                inputs["pixel_values"], pixel_mask=inputs.get("pixel_mask"), prompt_embeds=prompt_embeds
            )

    else:
        model = AutoModelForImageClassification.from_pretrained(folder).eval()
        if model.config.num_labels != len(CHEXPERT_OBSERVATIONS):
            raise ValueError(
                f"{folder}: an image classifier of {model.config.num_labels} classes, expected one per observation "
                f"({len(CHEXPERT_OBSERVATIONS)})."
            )

        def predict(batch: list[list]) -> torch.Tensor:
            views = [[view] for study in batch for view in study]
            pixel_values = image_processor(views, num_views=1, return_tensors="pt")["pixel_values"][:, 0]
            view_probs = torch.sigmoid(model(pixel_values=pixel_values).logits)
            return torch.stack([chunk.mean(0) for chunk in view_probs.split([len(study) for study in batch])])

    probabilities = [
        predict([[load_image(path) for path in paths] for paths in studies[start : start + batch_size]])
        for start in range(0, len(studies), batch_size)
    ]
    return torch.cat(probabilities).float().numpy()


def positive_matrix(labels: Sequence[Sequence[int]]) -> np.ndarray:
    """(studies, 14) booleans: which observations each row of mention codes calls positive."""
    return np.asarray(labels) == POSITIVE


def per_observation_auroc(probabilities: np.ndarray, truth: np.ndarray, min_positives: int = 5) -> dict:
    """AUROC of each observation with at least ``min_positives`` positive (and one negative) studies, and their
    macro mean: ``{"macro_auroc", "observations": {name: {"auroc", "positives"}}}``."""
    observations = {}
    for index, name in enumerate(CHEXPERT_OBSERVATIONS):
        positives = int(truth[:, index].sum())
        if min_positives <= positives < len(truth):
            auroc = roc_auc_score(truth[:, index], probabilities[:, index])
            observations[name] = {"auroc": float(auroc), "positives": positives}
    macro = float(np.mean([value["auroc"] for value in observations.values()])) if observations else float("nan")
    return {"macro_auroc": macro, "min_positives": min_positives, "observations": observations}


def f1_thresholds(probabilities: np.ndarray, truth: np.ndarray, default: float = 0.5) -> list[float]:
    """Per observation, the probability threshold that maximises F1 on these studies (``default`` where they have
    no positive): how the classifier + retrieval pipeline turns probabilities into labels."""
    thresholds = []
    for index in range(truth.shape[1]):
        positives = truth[:, index]
        if not positives.any():
            thresholds.append(default)
            continue
        candidates = np.unique(probabilities[:, index])
        predicted = probabilities[:, index][None, :] >= candidates[:, None]
        tp = (predicted & positives).sum(1)
        f1 = 2 * tp / (predicted.sum(1) + positives.sum())
        thresholds.append(float(candidates[int(np.argmax(f1))]))
    return thresholds


__all__ = ["f1_thresholds", "per_observation_auroc", "positive_matrix", "study_probabilities"]
