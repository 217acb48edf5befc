"""Vision backbone warm-up for CMCRL: the backbone of a CMCRL config trained as a 14-observation image classifier.

The reference CMCRL starts its ResNet from ImageNet weights. Where none can be had (offline, or a backbone of another
size, as in ``cxrgen demo``), this stage trains the backbone on the training studies' views on the HF ``Trainer``: an
``AutoModelForImageClassification`` of the CMCRL config's ``backbone_config`` with 14 outputs and binary
cross-entropy (``problem_type="multi_label_classification"``); every view is labelled with the positive observations
of its study (``cxrgen.labels``: uncertain, negative and unmentioned count as 0).

The final folder (safetensors weights, config, the CMCRL image processor, a card) is what ``cxrgen train vlci --init
DIR`` loads into the report generator's backbone (``CmcrlForConditionalGeneration.load_backbone_weights``); add
``model: {freeze_backbone: true}`` to the VLCI config to keep it as trained.

Evaluation (per view, on the val split) logs ``eval_macro_f1`` and ``eval_micro_f1`` at probability 0.5.
Config: the CMCRL ``preset`` and ``model`` overrides (only ``image_size`` and ``backbone_config`` are used),
``data: {augment: true}``, ``training`` and ``card`` as in :mod:`cxrgen.trainers.common`.
"""

import logging

import torch
from transformers import AutoModelForImageClassification, Trainer, set_seed

from cxrgen.data.annotation import read_annotation
from cxrgen.data.collators import ObservationCollator, split_views
from cxrgen.evaluation.metrics import compute_ce_metrics
from cxrgen.labels import CHEXPERT_OBSERVATIONS
from cxrgen.methods import find_stage
from cxrgen.trainers.common import (
    ModelFolderCallback,
    build_training_args,
    card_info,
    data_options,
    load_split,
    load_stage_config,
    resume_checkpoint,
    save_final_model,
    training_setup,
)

logger = logging.getLogger(__name__)

STAGE = "backbone"
DEFAULT_PRESET = "iu-xray"
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


def observation_f1(eval_prediction):
    """Macro and micro F1 of the 14 observations at probability 0.5 (``compute_metrics`` of the Trainer), computed
    as the clinical-efficacy scores of report generation are."""
    predicted = (torch.as_tensor(eval_prediction.predictions) > 0).long().tolist()
    truth = (torch.as_tensor(eval_prediction.label_ids) > 0.5).long().tolist()
    scores = compute_ce_metrics(predicted, truth)
    return {"macro_f1": scores["macro"]["f1"], "micro_f1": scores["micro"]["f1"]}


def build_trainer(config, data, images, output, resume=False, init=None, trainer_args=()):
    """The backbone Trainer of a run, the checkpoint to resume from (None for a fresh run) and the card info."""
    from cxrgen.modeling.cmcrl import CmcrlConfig
    from cxrgen.processing.image_processing_cxr import CxrImageProcessor

    if init is not None:
        raise ValueError("The backbone stage starts from random weights; --init is not used here.")
    stage_config = load_stage_config(config)
    if stage_config.processor:
        logger.warning(
            "%s: the 'processor' section is not used by the backbone stage (it has no tokenizer).", stage_config.source
        )
    annotation = read_annotation(data)
    checkpoint = resume_checkpoint(output, resume)
    model_config = CmcrlConfig.from_preset(stage_config.preset or DEFAULT_PRESET, **stage_config.model)
    args = build_training_args(
        output, TRAINING_DEFAULTS, stage_config.training, trainer_args, source=stage_config.source
    )
    options = data_options(stage_config)
    evaluating = str(getattr(args.eval_strategy, "value", args.eval_strategy)) != "no"

    set_seed(args.seed)
    classifier_config = model_config.backbone_config.__class__(
        **{
            **model_config.backbone_config.to_dict(),
            "num_labels": len(CHEXPERT_OBSERVATIONS),
            "id2label": dict(enumerate(CHEXPERT_OBSERVATIONS)),
            "label2id": {name: index for index, name in enumerate(CHEXPERT_OBSERVATIONS)},
            "problem_type": "multi_label_classification",
        }
    )
    model = AutoModelForImageClassification.from_config(classifier_config)
    image_processor = CxrImageProcessor(size={"height": model_config.image_size, "width": model_config.image_size})
    setup = training_setup(
        stage_config,
        args,
        annotation,
        data,
        **{
            "image size": model_config.image_size,
            "backbone": model_config.backbone_config.model_type,
            "augmentation": options["augment"],
        },
    )
    info = card_info(
        stage_config, annotation, data, output, find_stage(STAGE)[0].name, "vision backbone warm-up", setup
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=split_views(load_split(annotation, images, "train")),
        eval_dataset=split_views(load_split(annotation, images, "val")) if evaluating else None,
        data_collator=ObservationCollator(image_processor, augment_seed=args.seed if options["augment"] else None),
        processing_class=image_processor,
        compute_metrics=observation_f1 if evaluating else None,
        callbacks=[ModelFolderCallback(info, write_card=_write_card)],
    )
    return trainer, checkpoint, info


def _write_card(output, info, log_history, step):
    from huggingface_hub import ModelCard, ModelCardData

    evaluation = next((entry for entry in log_history if entry.get("step") == step and "eval_macro_f1" in entry), {})
    metrics = {key[5:]: evaluation[key] for key in ("eval_macro_f1", "eval_micro_f1") if key in evaluation}
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-classification",
        tags=["chest-x-ray", "medical", "cxrgen", "vision-backbone"],
        datasets=[info.dataset_id],
    )
    results = "\n".join(f"- {name}: {value:.4f}" for name, value in metrics.items()) or "- not evaluated"
    setup = "\n".join(f"- {key}: {value}" for key, value in info.training_setup.items())
    text = f"""---
{data.to_yaml()}
---

# {info.model_name}

A vision backbone for CMCRL report generation (cxrgen), trained as a multi-label classifier of the 14 CheXpert
observations on the views of {info.dataset_name}{" (phantom radiographs)" if info.is_phantom_data else ""}. It is an
intermediate checkpoint: `cxrgen train vlci --init <this folder>` loads it into a report generator's backbone.

**Intended use: research only. Not for clinical decisions.** Labels come from a rule-based labeler of the reports,
not from radiologists; a classifier's errors here become the report generator's.

## Validation (per view, probability 0.5)

{results}

## Training setup

{setup}
"""
    ModelCard(text).save(output / "README.md")


def run(config, data, images, output, resume=False, init=None, trainer_args=()):
    """Train the backbone and save the final (best, when ``load_best_model_at_end``) classifier folder in
    ``output`` (see cxrgen.trainers.common for the arguments)."""
    trainer, checkpoint, info = build_trainer(config, data, images, output, resume, init, trainer_args)
    trainer.train(resume_from_checkpoint=checkpoint)
    return save_final_model(trainer, output, info, write_card=_write_card)


__all__ = ["build_trainer", "observation_f1", "run"]
