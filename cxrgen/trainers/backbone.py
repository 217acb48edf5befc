"""Vision backbone warm-up for CMCRL: the backbone of a CMCRL config trained as a 14-observation image classifier.

The reference CMCRL starts its ResNet from ImageNet weights. Where none can be had (offline, or a backbone of another
size, as in ``cxrgen demo``), this stage trains the backbone on the training studies' views on the HF ``Trainer``: an
``AutoModelForImageClassification`` of the CMCRL config's ``backbone_config`` with 14 outputs and binary
cross-entropy (``problem_type="multi_label_classification"``); every view is labelled with the positive observations
of its study (``cxrgen.labels``: uncertain, negative and unmentioned count as 0). ``backbone_weights``
(``--backbone-weights``: a local folder or a Hub id of the backbone, its base model or a classifier, e.g.
``microsoft/resnet-101``) starts it from those weights instead of random ones; its 14-observation head starts fresh.

The final folder (safetensors weights, config, the CMCRL image processor, a card) is what ``cxrgen train vlci --init
DIR`` loads into the report generator's backbone (``CmcrlForConditionalGeneration.load_backbone_weights``); add
``model: {freeze_backbone: true}`` to the VLCI config to keep it as trained.

Evaluation (per view, on the val split) logs ``eval_macro_f1`` and ``eval_micro_f1`` at probability 0.5.
Config: the CMCRL ``preset`` and ``model`` overrides (only ``image_size`` and ``backbone_config`` are used),
``data: {augment: true}``, ``training`` and ``card`` as in :mod:`cxrgen.trainers.stage_config`.
"""

import logging

import torch
from transformers import AutoModelForImageClassification, EvalPrediction, PreTrainedConfig, PreTrainedModel

from cxrgen.data.collators import ObservationCollator, split_views
from cxrgen.evaluation.metrics import compute_ce_metrics
from cxrgen.hub_cards.card import VISION_BACKBONE
from cxrgen.labels import CHEXPERT_OBSERVATIONS
from cxrgen.modeling.cmcrl import CmcrlConfig
from cxrgen.processing.image_processing_cxr import CxrImageProcessor
from cxrgen.trainers.stage import StageParts, StageRun, TrainingStage
from cxrgen.trainers.stage_config import StageConfig
from cxrgen.trainers.training_data import data_options

logger = logging.getLogger(__name__)

# The classifier's head, which a checkpoint of the backbone alone lacks and an ImageNet classifier has for 1000 labels.
CLASSIFIER_HEAD = "classifier"

TRAINING_DEFAULTS = {
    "learning_rate": 1e-3,
    "weight_decay": 0.01,
    "optim": "adamw_torch",
    "lr_scheduler_type": "linear",
    "warmup_steps": 20,
    "num_train_epochs": 10,
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 64,
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "metric_for_best_model": "macro_f1",
    "load_best_model_at_end": True,
    # The collator reads the rows' images and observation labels.
    "remove_unused_columns": False,
}


def observation_f1(eval_prediction: EvalPrediction) -> dict[str, float]:
    """Macro and micro F1 of the 14 observations at probability 0.5 (``compute_metrics`` of the Trainer), computed
    as the clinical-efficacy scores of report generation are."""
    predicted = (torch.as_tensor(eval_prediction.predictions) > 0).long().tolist()
    truth = (torch.as_tensor(eval_prediction.label_ids) > 0.5).long().tolist()
    scores = compute_ce_metrics(predicted, truth)
    return {"macro_f1": scores["macro"]["f1"], "micro_f1": scores["micro"]["f1"]}


def pretrained_classifier(weights: str, config: PreTrainedConfig) -> PreTrainedModel:
    """The image classifier of ``config`` with its base model loaded from ``weights`` (a checkpoint of the backbone,
    its base model or a classifier with another head; later stages it has are not used) and a fresh head.

    Raises ValueError naming ``weights`` when a tensor of the base model is missing there or has another shape."""
    model, info = AutoModelForImageClassification.from_pretrained(
        weights, config=config, ignore_mismatched_sizes=True, output_loading_info=True
    )
    head = f"{CLASSIFIER_HEAD}."
    unloaded = [name for name in info["missing_keys"] if not name.startswith(head)]
    unloaded += [name for name, *_ in info["mismatched_keys"] if not name.startswith(head)]
    if unloaded:
        raise ValueError(
            f"{weights}: {len(unloaded)} backbone tensors are missing there or have another shape, e.g. "
            f"{sorted(unloaded)[:3]} (another backbone_config?)"
        )
    return model


class BackboneStage(TrainingStage):
    """The backbone warm-up (see the module docstring)."""

    name = "backbone"
    title = "vision backbone warm-up"
    init_refusal = "The backbone stage starts from random weights or from --backbone-weights; --init is not used here."
    backbone_weights_refusal = None

    def check_config(self, config: StageConfig) -> None:
        if config.processor:
            logger.warning(
                "%s: the 'processor' section is not used by the backbone stage (it has no tokenizer).", config.source
            )

    def build(self, run: StageRun) -> StageParts:
        model_config = CmcrlConfig.from_preset(run.preset, **run.config.model)
        args = run.training_args(TRAINING_DEFAULTS)
        options = data_options(run.config)
        classifier_config = model_config.backbone_config.__class__(
            **{
                **model_config.backbone_config.to_dict(),
                "num_labels": len(CHEXPERT_OBSERVATIONS),
                "id2label": dict(enumerate(CHEXPERT_OBSERVATIONS)),
                "label2id": {name: index for index, name in enumerate(CHEXPERT_OBSERVATIONS)},
                "problem_type": "multi_label_classification",
            }
        )
        if run.backbone_weights is None:
            model = AutoModelForImageClassification.from_config(classifier_config)
        else:
            model = run.load_backbone(lambda weights: pretrained_classifier(weights, classifier_config))
        image_processor = CxrImageProcessor(size={"height": model_config.image_size, "width": model_config.image_size})
        setup = {
            "image size": model_config.image_size,
            "backbone": model_config.backbone_config.model_type,
            "augmentation": options["augment"],
            "backbone weights": run.backbone_start,
        }
        info = run.card_info(
            args,
            setup,
            kind=VISION_BACKBONE,
            metric_names={"macro_f1": "macro_f1", "micro_f1": "micro_f1"},
            metrics_source_description="per view, probability 0.5",
        )
        train = run.split("train")
        val = run.eval_split(args)
        return StageParts(
            model=model,
            args=args,
            train_dataset=split_views(train),
            eval_dataset=split_views(val) if val is not None else None,
            data_collator=ObservationCollator(image_processor, augment_seed=args.seed if options["augment"] else None),
            processing_class=image_processor,
            compute_metrics=observation_f1 if val is not None else None,
            info=info,
        )


stage = BackboneStage()
build_trainer = stage.build_trainer
run = stage.run

__all__ = ["BackboneStage", "build_trainer", "observation_f1", "pretrained_classifier", "run"]
