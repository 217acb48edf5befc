"""Stage 1 of TRRG: disease-aware image-sentence contrastive pre-training (``TrrgForContrastivePretraining``) on the
HF ``Trainer``.

Each training step pairs every study (all its views) with one sentence of its report, sampled disease-aware by
:class:`cxrgen.data.trrg_collators.TrrgContrastiveCollator` (a new draw every epoch); evaluation uses one fixed
sentence per ``val`` study and logs the contrastive loss (``eval_loss``, also the default best-model metric).

Config (see cxrgen.trainers.stage_config for the YAML schema):

- ``preset``: ``tiny`` (a few-minute CPU model for pipeline checks), ``iu-xray`` / ``mimic-cxr`` (Swin-B at 224 px
  and a BERT-base-sized text tower, the model defaults; the two differ only in their training defaults).
- ``model``: ``TrrgContrastiveConfig`` fields (``vision_config`` / ``text_config`` given as mappings are merged into
  the preset's), plus ``vision_encoder`` / ``text_encoder``: local (or Hub) checkpoint folders whose weights start
  the towers; a ``text_encoder`` brings its own tokenizer.
- ``processor``: ``image_size`` (default: the vision config's), ``max_length`` (sentence tokens), ``min_frequency``
  (of the word-level tokenizer built from the training sentences when there is no ``text_encoder``).

Output: ``checkpoint-<step>`` folders and the final model folder, each complete (weights, config with remote code,
processor, card). The processor is a ``CLIPProcessor``, transformers' standard pairing of an image processor (here
``CxrImageProcessor``) with the text tower's tokenizer, loaded back with ``AutoProcessor``. The final folder also
holds ``disease_prompt_embeds.safetensors`` (``prompt_embeds``: (14, 2, projection_dim), positive then negative
ensembled prompt embedding per observation), which is what stage 2's zero-shot head needs besides the vision tower:
``model.zero_shot(pixel_values, prompt_embeds=...)`` uses it without the text tower. ``cxrgen train trrg --init``
with this folder hands both over (see :mod:`cxrgen.trainers.trrg`).
"""

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from transformers import (
    AutoModel,
    AutoTokenizer,
    CLIPProcessor,
    PreTrainedTokenizerBase,
    Trainer,
)

from cxrgen.data.trrg_collators import TrrgContrastiveCollator, report_sentences
from cxrgen.labels import POSITIVE
from cxrgen.modeling.trrg import TrrgForContrastivePretraining
from cxrgen.modeling.trrg.configuration_trrg import TrrgContrastiveConfig
from cxrgen.presets import stage_preset
from cxrgen.processing.image_processing_cxr import CxrImageProcessor
from cxrgen.processing.tokenization import build_report_tokenizer
from cxrgen.trainers.arguments import check_best_metric
from cxrgen.trainers.model_folders import CardInfo
from cxrgen.trainers.model_options import merge_model_options, sub_config, vision_image_size
from cxrgen.trainers.processors import load_processor
from cxrgen.trainers.stage import StageParts, StageRun, TrainingStage, load_checkpoint
from cxrgen.trainers.stage_config import StageConfig
from cxrgen.trainers.trainer_mixins import CheckpointReloadMixin, StageCollatorsMixin

logger = logging.getLogger(__name__)

STAGE_NAME = "trrg-contrastive"
DEFAULT_PRESET = "iu-xray"
PROMPT_EMBEDS_NAME = "disease_prompt_embeds.safetensors"
TRAINING_DEFAULTS = {
    "learning_rate": 1e-4,
    "weight_decay": 0.05,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.05,
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 32,
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "metric_for_best_model": "loss",
    "load_best_model_at_end": True,
    # The collator builds the model inputs from the rows' images and reports.
    "remove_unused_columns": False,
}
# Without a cap, the positives of a finding seen in 1% of the studies would weigh 99x the negatives; 10 is the cap
# the tiny recipe was tuned with (benchmarks/QUALITY.md).
PROMPT_POSITIVE_WEIGHT_CAP = 10.0
ENCODER_KEYS = ("vision_encoder", "text_encoder")
PROCESSOR_KEYS = ("image_size", "max_length", "min_frequency")


def build_text_tokenizer(
    train_reports: Iterable[str], prompts: Iterable[str], min_frequency: int, max_length: int
) -> PreTrainedTokenizerBase:
    """Word-level tokenizer over the training sentences; the zero-shot prompt phrases are always in its vocabulary."""
    sentences = [sentence for report in train_reports for sentence in report_sentences(report)]
    return build_report_tokenizer(
        sentences + list(prompts) * min_frequency, min_frequency, model_max_length=max_length
    )


def stage_settings(stage_config: StageConfig) -> dict:
    """What the run's preset gives this stage: ``model``, ``processor`` and ``training``
    (:func:`cxrgen.presets.stage_preset`)."""
    return stage_preset(STAGE_NAME, stage_config.preset or DEFAULT_PRESET, TrrgContrastiveConfig)


def processor_options(stage_config: StageConfig, base: dict | None = None) -> dict:
    """The preset's ``processor`` options (of ``base``, the :func:`stage_settings`, read when None) updated by the
    YAML ``processor`` section."""
    base = stage_settings(stage_config) if base is None else base
    return {**base["processor"], **stage_config.section("processor", PROCESSOR_KEYS)}


def build_model_and_processor(
    stage_config: StageConfig, train_reports: Iterable[str], base: dict | None = None
) -> tuple[TrrgForContrastivePretraining, CLIPProcessor]:
    """The ``TrrgForContrastivePretraining`` and ``CLIPProcessor`` of a fresh run (see the module docstring);
    ``base`` as in :func:`processor_options`."""
    base = stage_settings(stage_config) if base is None else base
    options = merge_model_options(
        base["model"], stage_config.model, TrrgContrastiveConfig, ENCODER_KEYS, stage_config.source
    )
    encoders = {key: options.pop(key, None) for key in ENCODER_KEYS}
    settings = processor_options(stage_config, base)
    vision_model = text_model = None
    if encoders["vision_encoder"] is not None:
        vision_model = load_checkpoint(AutoModel.from_pretrained, encoders["vision_encoder"], "model.vision_encoder")
        options["vision_config"] = vision_model.config
    if encoders["text_encoder"] is not None:
        text_model = load_checkpoint(AutoModel.from_pretrained, encoders["text_encoder"], "model.text_encoder")
        tokenizer = AutoTokenizer.from_pretrained(encoders["text_encoder"])
        options["text_config"] = text_model.config
    options = {
        key: sub_config(value, stage_config.source, key) if key.endswith("_config") else value
        for key, value in options.items()
    }
    config = TrrgContrastiveConfig(**options)
    if text_model is None:
        tokenizer = build_text_tokenizer(
            train_reports,
            config.flat_disease_prompts(),
            settings.get("min_frequency", 3),
            settings.get("max_length", 64),
        )
        config.text_config.vocab_size = len(tokenizer)
        config.text_config.pad_token_id = tokenizer.pad_token_id
    model = TrrgForContrastivePretraining(config)
    if vision_model is not None:
        model.vision_model.load_state_dict(vision_model.state_dict())
    if text_model is not None:
        model.text_model.load_state_dict(text_model.state_dict())
    size = vision_image_size(config.vision_config, settings)
    processor = CLIPProcessor(
        image_processor=CxrImageProcessor(size={"height": size, "width": size}), tokenizer=tokenizer
    )
    return model, processor


def prompt_positive_weights(labels: Iterable[Iterable[int]]) -> list[float]:
    """Per observation, negatives / positives among the training studies (positive = code 1), within
    [1, PROMPT_POSITIVE_WEIGHT_CAP]: the weight of the positive term of the disease-prompt loss."""
    positives = torch.tensor([[code == POSITIVE for code in codes] for codes in labels], dtype=torch.float64)
    frequency = positives.mean(0).clamp(min=1.0 / len(positives))
    return ((1 - frequency) / frequency).clamp(1.0, PROMPT_POSITIVE_WEIGHT_CAP).tolist()


class TrrgContrastiveTrainer(CheckpointReloadMixin, StageCollatorsMixin, Trainer):
    """A Trainer that collates evaluation sets with ``eval_data_collator`` (a fixed sentence per study)."""


def save_prompt_embeddings(
    model: TrrgForContrastivePretraining, tokenizer: PreTrainedTokenizerBase, folder: str | os.PathLike
) -> Path:
    """Write the ensembled zero-shot prompt embeddings of ``model`` (eval mode) into ``folder``."""
    from safetensors.torch import save_file

    model.eval()
    path = Path(folder) / PROMPT_EMBEDS_NAME
    save_file({"prompt_embeds": model.encode_disease_prompts(tokenizer).contiguous().cpu()}, str(path))
    return path


class TrrgContrastiveStage(TrainingStage):
    """TRRG stage 1 (see the module docstring)."""

    name = STAGE_NAME
    title = "TRRG contrastive pre-training"
    default_preset = DEFAULT_PRESET
    trainer_class = TrrgContrastiveTrainer
    init_refusal = (
        "trrg-contrastive is the first TRRG stage: it takes no --init (give pretrained towers as "
        "model.vision_encoder / model.text_encoder in the config)."
    )
    backbone_weights_refusal = (
        "the vision tower's checkpoint is model.vision_encoder in the config, not backbone_weights."
    )

    def check_config(self, config: StageConfig) -> None:
        config.section("data", ())

    def build(self, run: StageRun) -> StageParts:
        base = stage_settings(run.config)
        args = run.training_args({**TRAINING_DEFAULTS, **base["training"]})
        check_best_metric(args)
        if args.metric_for_best_model not in (None, "loss", "eval_loss"):
            raise ValueError(
                f"metric_for_best_model={args.metric_for_best_model!r}: stage 1 only logs the contrastive loss "
                "('loss')."
            )
        train = run.split("train")
        val = run.eval_split(args)
        if run.checkpoint is not None:
            processor = load_processor(run.checkpoint, CLIPProcessor)
            model = TrrgForContrastivePretraining.from_pretrained(run.checkpoint)
        else:
            model, processor = build_model_and_processor(run.config, train["report"], base)
            if model.config.prompt_loss_weight > 0 and model.config.prompt_positive_weights is None:
                model.config.prompt_positive_weights = prompt_positive_weights(train["labels"])
        prompt_loss = model.config.prompt_loss_weight > 0
        collate = dict(
            finding_sentence_weight=model.config.finding_sentence_weight,
            max_length=processor_options(run.config, base).get("max_length"),
            disease_prompts=model.config.flat_disease_prompts() if prompt_loss else None,
        )
        setup = {
            "sentence sampling": f"one per study, finding sentences x{model.config.finding_sentence_weight}",
            "soft targets (same sentence / findings)": model.config.same_findings_positive,
            "disease-prompt loss weight": model.config.prompt_loss_weight,
        }
        return StageParts(
            model=model,
            args=args,
            train_dataset=train,
            eval_dataset=val,
            data_collator=TrrgContrastiveCollator(processor.image_processor, processor.tokenizer, **collate),
            processing_class=processor,
            info=run.card_info(args, setup),
            trainer_kwargs={
                "eval_data_collator": TrrgContrastiveCollator(
                    processor.image_processor, processor.tokenizer, seed=args.seed, **collate
                )
            },
        )

    def save(self, trainer: Trainer, output: Path, info: CardInfo) -> Path:
        """The final model folder, with the zero-shot prompt embeddings that stage 2 needs."""
        output = super().save(trainer, output, info)
        if trainer.is_world_process_zero():
            path = save_prompt_embeddings(trainer.model, trainer.processing_class.tokenizer, output)
            logger.info("Zero-shot prompt embeddings for stage 2 written to %s", path)
        return output


stage = TrrgContrastiveStage()
build_trainer = stage.build_trainer
run = stage.run

__all__ = [
    "PROMPT_EMBEDS_NAME",
    "TRAINING_DEFAULTS",
    "TrrgContrastiveStage",
    "TrrgContrastiveTrainer",
    "build_model_and_processor",
    "build_trainer",
    "run",
    "save_prompt_embeddings",
]
