"""Stage 1 of TRRG: disease-aware image-sentence contrastive pre-training (``TrrgForContrastivePretraining``) on the
HF ``Trainer``.

Each training step pairs every study (all its views) with one sentence of its report, sampled disease-aware by
:class:`cxrgen.data.trrg_collators.TrrgContrastiveCollator` (a new draw every epoch); evaluation uses one fixed
sentence per ``val`` study and logs the contrastive loss (``eval_loss``, also the default best-model metric).

Config (see cxrgen.trainers.common for the YAML schema):

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

import dataclasses
import logging
from pathlib import Path

from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    CLIPProcessor,
    PreTrainedModel,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.utils import SAFE_WEIGHTS_NAME

from cxrgen.data.annotation import read_annotation
from cxrgen.data.trrg_collators import TrrgContrastiveCollator, report_sentences
from cxrgen.methods import find_stage
from cxrgen.modeling.trrg.configuration_trrg import TrrgContrastiveConfig, preset_model
from cxrgen.presets import stage_preset
from cxrgen.trainers.common import (
    ModelFolderCallback,
    build_training_args,
    card_info,
    check_best_metric,
    load_processor,
    load_split,
    load_stage_config,
    resume_checkpoint,
    save_final_model,
    training_setup,
)

logger = logging.getLogger(__name__)

STAGE = "trrg-contrastive"
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
ENCODER_KEYS = ("vision_encoder", "text_encoder")
PROCESSOR_KEYS = ("image_size", "max_length", "min_frequency")


def preset(stage, config_class, name):
    """What preset ``name`` gives ``stage``: ``model`` (the preset's ``config_class`` fields updated by the stage's
    model options), ``processor`` and ``training`` (stage defaults it overrides)."""
    settings = {"model": {}, "processor": {}, "training": {}, **stage_preset(stage, name)}
    return {**settings, "model": {**preset_model(config_class, name), **settings["model"]}}


def merge_model_options(base, overrides, config_class, extra_keys, source):
    """Preset model options updated by the YAML ``model`` section: keys must be ``config_class`` fields or
    ``extra_keys``; a sub-config mapping is merged into the preset's unless it names another ``model_type``."""
    fields = {field.name for field in dataclasses.fields(config_class)}
    unknown = sorted(set(overrides) - fields - set(extra_keys))
    if unknown:
        raise ValueError(
            f"{source}: unknown key(s) {unknown} in 'model'; expected {config_class.__name__} fields or {list(extra_keys)}."
        )
    merged = dict(base)
    for key, value in overrides.items():
        previous = merged.get(key)
        if (
            isinstance(value, dict)
            and isinstance(previous, dict)
            and value.get("model_type", previous.get("model_type")) == previous.get("model_type")
        ):
            merged[key] = {**previous, **value}
        else:
            merged[key] = value
    return merged


def sub_config(values, source, name):
    """A sub-config mapping with a ``model_type`` -> that transformers config (None stays None)."""
    if values is None or not isinstance(values, dict):
        return values
    values = dict(values)
    if "model_type" not in values:
        raise ValueError(f"{source}: model.{name} needs a model_type (e.g. swin, vit, bert, llama).")
    return AutoConfig.for_model(values.pop("model_type"), **values)


def vision_image_size(vision_config, settings):
    """The image size of the processor: the ``processor`` option, else the vision config's ``image_size``."""
    size = settings.get("image_size", getattr(vision_config, "image_size", None))
    if not isinstance(size, int) or size < 1:
        raise ValueError(
            f"processor.image_size must be a positive integer (the vision config has none), got {size!r}."
        )
    return size


def build_text_tokenizer(train_reports, prompts, min_frequency, max_length):
    """Word-level tokenizer over the training sentences; the zero-shot prompt phrases are always in its vocabulary."""
    from cxrgen.processing.tokenization import build_report_tokenizer

    sentences = [sentence for report in train_reports for sentence in report_sentences(report)]
    return build_report_tokenizer(
        sentences + list(prompts) * min_frequency, min_frequency, model_max_length=max_length
    )


def processor_options(stage_config):
    """The preset's ``processor`` options updated by the YAML ``processor`` section."""
    base = preset(STAGE, TrrgContrastiveConfig, stage_config.preset or DEFAULT_PRESET)
    return {**base["processor"], **stage_config.section("processor", PROCESSOR_KEYS)}


def build_model_and_processor(stage_config, train_reports):
    """The ``TrrgForContrastivePretraining`` and ``CLIPProcessor`` of a fresh run (see the module docstring)."""
    from cxrgen.modeling.trrg import TrrgForContrastivePretraining
    from cxrgen.processing.image_processing_cxr import CxrImageProcessor

    base = preset(STAGE, TrrgContrastiveConfig, stage_config.preset or DEFAULT_PRESET)
    options = merge_model_options(
        base["model"], stage_config.model, TrrgContrastiveConfig, ENCODER_KEYS, stage_config.source
    )
    encoders = {key: options.pop(key, None) for key in ENCODER_KEYS}
    settings = processor_options(stage_config)
    vision_model = text_model = None
    if encoders["vision_encoder"] is not None:
        vision_model = AutoModel.from_pretrained(encoders["vision_encoder"])
        options["vision_config"] = vision_model.config
    if encoders["text_encoder"] is not None:
        text_model = AutoModel.from_pretrained(encoders["text_encoder"])
        tokenizer = AutoTokenizer.from_pretrained(encoders["text_encoder"])
        options["text_config"] = text_model.config
    options = {
        key: sub_config(value, stage_config.source, key) if key.endswith("_config") else value
        for key, value in options.items()
    }
    config = TrrgContrastiveConfig(**options)
    if text_model is None:
        prompts = [prompt for positives, negatives in config.disease_prompts() for prompt in positives + negatives]
        tokenizer = build_text_tokenizer(
            train_reports, prompts, settings.get("min_frequency", 3), settings.get("max_length", 64)
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


class CheckpointReloadMixin:
    """Trainer mixin: reload checkpoints (``--resume``, ``load_best_model_at_end``) through ``from_pretrained``.

    The transformers 5.23 Trainer reloads a checkpoint's model.safetensors with a raw ``load_state_dict(strict=False)``,
    but ``save_pretrained`` writes some sub-models under their legacy key names (Swin: ``attention.self.query`` for
    ``attention.q_proj``) that only ``from_pretrained`` converts back: the vision tower would silently keep its current
    weights (one "unexpected keys" warning). Plain (non-peft, non-DeepSpeed/FSDP) models are reloaded here instead.
    """

    def _reload(self, model, folder):
        if not (
            isinstance(model, PreTrainedModel)
            and (Path(folder) / SAFE_WEIGHTS_NAME).is_file()
            and not (self.is_deepspeed_enabled or self.is_fsdp_enabled)
        ):
            return False
        loaded = type(model).from_pretrained(folder, dtype=model.dtype)
        model.load_state_dict(loaded.state_dict())
        return True

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        if not self._reload(self.model if model is None else model, resume_from_checkpoint):
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self):
        if not self._reload(self.model, self.state.best_model_checkpoint):
            super()._load_best_model()


class TrrgContrastiveTrainer(CheckpointReloadMixin, Trainer):
    """A Trainer that collates evaluation sets with ``eval_data_collator`` (a fixed sentence per study)."""

    def __init__(self, *args, eval_data_collator=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_data_collator = eval_data_collator

    def get_eval_dataloader(self, eval_dataset=None):
        if self.eval_data_collator is None:
            return super().get_eval_dataloader(eval_dataset)
        training_collator, self.data_collator = self.data_collator, self.eval_data_collator
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = training_collator


def save_prompt_embeddings(model, tokenizer, folder):
    """Write the ensembled zero-shot prompt embeddings of ``model`` (eval mode) into ``folder``."""
    from safetensors.torch import save_file

    model.eval()
    path = Path(folder) / PROMPT_EMBEDS_NAME
    save_file({"prompt_embeds": model.encode_disease_prompts(tokenizer).contiguous().cpu()}, str(path))
    return path


def build_trainer(config, data, images, output, resume=False, init=None, trainer_args=()):
    """The stage-1 Trainer, the checkpoint to resume from (None for a fresh run) and the card info; see :func:`run`."""
    from cxrgen.modeling.trrg import TrrgForContrastivePretraining

    if init is not None:
        raise ValueError(
            "trrg-contrastive is the first TRRG stage: it takes no --init (give pretrained towers as "
            "model.vision_encoder / model.text_encoder in the config)."
        )
    stage_config = load_stage_config(config)
    stage_config.section("data", ())
    annotation = read_annotation(data)
    checkpoint = resume_checkpoint(output, resume)
    base = preset(STAGE, TrrgContrastiveConfig, stage_config.preset or DEFAULT_PRESET)
    args = build_training_args(
        output,
        {**TRAINING_DEFAULTS, **base["training"]},
        stage_config.training,
        trainer_args,
        args_class=TrainingArguments,
        source=stage_config.source,
    )
    check_best_metric(args)
    if args.metric_for_best_model not in (None, "loss", "eval_loss"):
        raise ValueError(
            f"metric_for_best_model={args.metric_for_best_model!r}: stage 1 only logs the contrastive loss ('loss')."
        )
    train = load_split(annotation, images, "train")
    evaluating = str(getattr(args.eval_strategy, "value", args.eval_strategy)) != "no"
    val = load_split(annotation, images, "val") if evaluating else None

    set_seed(args.seed)
    if checkpoint is not None:
        processor = load_processor(checkpoint, CLIPProcessor)
        model = TrrgForContrastivePretraining.from_pretrained(checkpoint)
    else:
        model, processor = build_model_and_processor(stage_config, train["report"])
    collate = dict(
        finding_sentence_weight=model.config.finding_sentence_weight,
        max_length=processor_options(stage_config).get("max_length"),
    )
    setup = training_setup(
        stage_config,
        args,
        annotation,
        data,
        **{
            "sentence sampling": f"one per study, finding sentences x{model.config.finding_sentence_weight}",
            "soft targets (same sentence / findings)": model.config.same_findings_positive,
        },
    )
    info = card_info(
        stage_config, annotation, data, output, find_stage(STAGE)[0].name, "TRRG contrastive pre-training", setup
    )
    trainer = TrrgContrastiveTrainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=val,
        data_collator=TrrgContrastiveCollator(processor.image_processor, processor.tokenizer, **collate),
        eval_data_collator=TrrgContrastiveCollator(
            processor.image_processor, processor.tokenizer, seed=args.seed, **collate
        ),
        processing_class=processor,
        callbacks=[ModelFolderCallback(info)],
    )
    return trainer, checkpoint, info


def run(config, data, images, output, resume=False, init=None, trainer_args=()) -> Path:
    """Pre-train the TRRG vision encoder contrastively and save the final model folder (with the zero-shot prompt
    embeddings) in ``output`` (see cxrgen.trainers.common for the arguments)."""
    trainer, checkpoint, info = build_trainer(config, data, images, output, resume, init, trainer_args)
    trainer.train(resume_from_checkpoint=checkpoint)
    output = save_final_model(trainer, output, info)
    if trainer.is_world_process_zero():
        path = save_prompt_embeddings(trainer.model, trainer.processing_class.tokenizer, output)
        logger.info("Zero-shot prompt embeddings for stage 2 written to %s", path)
    return output


__all__ = [
    "PROMPT_EMBEDS_NAME",
    "CheckpointReloadMixin",
    "TRAINING_DEFAULTS",
    "TrrgContrastiveTrainer",
    "build_trainer",
    "run",
    "save_prompt_embeddings",
]
