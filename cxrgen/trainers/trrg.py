"""Stage 2 of TRRG: clue-enhanced fine-tuning of ``TrrgForConditionalGeneration`` on the HF ``Trainer``.

Training batches come from :class:`cxrgen.data.trrg_collators.TrrgCollator`: prompt + report + EOS with the prompt
masked in ``labels``, and the study's labels as ``disease_labels`` for the disease-aware consistency loss.

Evaluation (``predict_with_generate``, default on) generates a report for every ``val`` study: ``Seq2SeqTrainer``
does not fit a decoder-only model (its loss on prompt-only batches fails), so :class:`TrrgTrainer` overrides
``prediction_step``: it computes the loss on the full sequences, pops the labels, cuts each sequence to its prompt
(left-padded), generates (``generation_num_beams`` beams, at most ``generation_max_length`` *new* tokens) and
returns the generated ids without the prompt. ``compute_metrics`` (``cxrgen.trainers.metrics.report_metrics``) scores
them against the whole val reports; ``metric_for_best_model`` (default ``bleu_4``) picks the final model.

Config (see cxrgen.trainers.stage_config for the YAML schema):

- ``preset``: ``tiny`` (a word-level tiny Llama trained from scratch, for pipeline checks on CPU), ``iu-xray`` /
  ``mimic-cxr`` (Swin-B at 224 px, Llama-2-7B-chat from the Hub with LoRA r=16; R2GenGPT's lengths and decoding).
- ``model``: ``TrrgConfig`` fields (``vision_config`` / ``text_config`` mappings are merged into the preset's) and
  ``language_model``: a causal LM checkpoint (local folder or Hub id, with its tokenizer; ``<image>``/``<clue>`` are
  added and the embeddings resized) or null: an LLM from ``text_config`` with a word-level tokenizer built from the
  training reports; ``vision_encoder``: a vision checkpoint for the tower (not with ``--init``); ``lora``: null (full
  fine-tuning) or ``{r, alpha, dropout}``; ``load_in_4bit``: nf4 LLM weights (bitsandbytes; needs ``lora``);
  ``clue_threshold_calibration``: null (the config's ``clue_threshold``) or ``train_f1``: with ``--init``, each
  observation's clue threshold is the one at which the stage-1 zero-shot probabilities reach their best F1 on the
  training split (:func:`calibrated_clue_thresholds`; needs the perception frozen in stage 2).
- ``data``: ``balance_power`` (default 0: off) draws training studies by the rarity of their positive observations
  (:func:`cxrgen.data.sampling.observation_balance_weights`), as VLCI does.
- ``processor``: ``image_size`` (default: the vision config's; with ``--init`` the stage-1 image processor is used),
  ``max_length`` (whole sequence: prompt + report + EOS; the report is cut, never the EOS), ``min_frequency`` (of the
  word-level tokenizer), ``prompt`` (the instruction).

``--init`` takes a ``trrg-contrastive`` folder: its vision encoder, visual projection, temperature and ensembled
disease prompt embeddings go into the vision tower and the zero-shot head (``TrrgForConditionalGeneration.from_parts``);
the transferred tensors are logged and named on the card.

Full fine-tuning: every checkpoint and the final folder are complete model folders (weights, config, remote code,
processor, card). LoRA (peft, the LLM's attention projections; the projector, clue injector, interaction module and
disease head trained fully as ``modules_to_save``): the run first writes the untrained full-precision model to
``<output>/base-model`` (a complete folder); ``checkpoint-<step>`` folders are adapter checkpoints (adapter weights
and config, whose ``base_model_name_or_path`` is that folder, plus the processor), which ``--resume`` continues and
peft's ``PeftModel.from_pretrained(base, checkpoint)`` loads. At the end the adapter (best one with
``load_best_model_at_end``) is saved to ``<output>/adapter`` and merged into the full-precision base, and the merged
model is the final model folder in ``<output>`` (for 4-bit runs too: the merge uses ``base-model``, not the nf4
weights).
"""

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training
from torch import nn
from transformers import (
    AutoTokenizer,
    PreTrainedTokenizerBase,
    Seq2SeqTrainingArguments,
    Trainer,
)

from cxrgen.compat import checkpointing_requested
from cxrgen.data.trrg_collators import TrrgCollator
from cxrgen.evaluation.perception import f1_thresholds, positive_matrix, study_probabilities
from cxrgen.modeling.loading import load_model_folder
from cxrgen.modeling.trrg import TrrgForConditionalGeneration, TrrgForContrastivePretraining
from cxrgen.modeling.trrg.configuration_trrg import TrrgConfig
from cxrgen.presets import stage_preset
from cxrgen.processing.image_processing_cxr import CxrImageProcessor
from cxrgen.processing.processing_trrg import DEFAULT_PROMPT, TrrgProcessor
from cxrgen.processing.tokenization import build_report_tokenizer
from cxrgen.trainers.arguments import check_best_metric
from cxrgen.trainers.metrics import report_metrics
from cxrgen.trainers.model_folders import CardInfo
from cxrgen.trainers.model_options import merge_model_options, sub_config, vision_image_size
from cxrgen.trainers.processors import load_processor
from cxrgen.trainers.stage import StageParts, StageRun, TrainingStage, check_checkpoint
from cxrgen.trainers.stage_config import StageConfig
from cxrgen.trainers.trainer_mixins import CheckpointReloadMixin, WeightedSamplingMixin
from cxrgen.trainers.training_data import data_options, sample_weights

logger = logging.getLogger(__name__)

STAGE_NAME = "trrg"
DEFAULT_PRESET = "iu-xray"
BASE_MODEL_DIR = "base-model"
ADAPTER_DIR = "adapter"
IMAGE_TOKEN, CLUE_TOKEN = "<image>", "<clue>"
IGNORE_INDEX = -100
MODEL_KEYS = ("language_model", "vision_encoder", "lora", "load_in_4bit", "clue_threshold_calibration")
CLUE_THRESHOLD_CALIBRATIONS = (None, "train_f1")
PROCESSOR_KEYS = ("image_size", "max_length", "min_frequency", "prompt")
LORA_KEYS = ("r", "alpha", "dropout")

TRAINING_DEFAULTS = {
    "learning_rate": 1e-4,
    "weight_decay": 0.0,
    "lr_scheduler_type": "cosine",
    "per_device_train_batch_size": 8,
    "per_device_eval_batch_size": 8,
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "predict_with_generate": True,
    "metric_for_best_model": "bleu_4",
    "load_best_model_at_end": True,
    # The collator builds the model inputs from the rows' images and reports.
    "remove_unused_columns": False,
}


def split_prompts(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor, pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompts (every real token before a sequence's first label) of training sequences."""
    prompts = []
    for index, (ids, mask, targets) in enumerate(zip(input_ids, attention_mask, labels)):
        supervised = (targets != IGNORE_INDEX).nonzero()
        if len(supervised) == 0:
            raise ValueError(f"sequence {index} of the batch has no report tokens (every label is {IGNORE_INDEX})")
        start = int(supervised[0])
        prompts.append(ids[:start][mask[:start].bool()])
    width = max(len(prompt) for prompt in prompts)
    prompt_ids = input_ids.new_full((len(prompts), width), pad_token_id)
    prompt_mask = attention_mask.new_zeros((len(prompts), width))
    for row, prompt in enumerate(prompts):
        prompt_ids[row, width - len(prompt) :] = prompt
        prompt_mask[row, width - len(prompt) :] = 1
    return prompt_ids, prompt_mask


class GeneratedReports:
    """``post_process_generation`` for ``report_metrics``: :class:`TrrgTrainer` returns report ids without the prompt,
    padded with -100 across batches; the processor decodes them as ids without a prompt."""

    def __init__(self, processor: TrrgProcessor):
        self.processor = processor

    def post_process_generation(self, generated_ids: np.ndarray) -> list[str]:
        """The reports of report ids padded with -100."""
        ids = np.asarray(generated_ids)
        ids = torch.as_tensor(np.where(ids == IGNORE_INDEX, self.processor.tokenizer.pad_token_id, ids))
        return self.processor.post_process_generation(ids, prompt_length=0)


class TrrgTrainer(CheckpointReloadMixin, WeightedSamplingMixin, Trainer):
    """A Trainer whose evaluation generates reports from each sequence's prompt (see the module docstring), and
    which draws training studies by ``train_sample_weights`` when given."""

    def __init__(self, *args, generation_kwargs: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.generation_kwargs = dict(generation_kwargs or {})

    def prediction_step(
        self, model: nn.Module, inputs: dict, prediction_loss_only: bool, ignore_keys: list[str] | None = None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        if prediction_loss_only or not self.args.predict_with_generate:
            return super().prediction_step(model, inputs, prediction_loss_only=True, ignore_keys=ignore_keys)
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs).detach()
        labels = inputs.pop("labels")
        prompt_ids, prompt_mask = split_prompts(
            inputs["input_ids"], inputs["attention_mask"], labels, self.processing_class.tokenizer.pad_token_id
        )
        generator = self.accelerator.unwrap_model(model)
        with torch.no_grad():
            generated = generator.generate(
                input_ids=prompt_ids,
                attention_mask=prompt_mask,
                pixel_values=inputs["pixel_values"],
                pixel_mask=inputs.get("pixel_mask"),
                **self.generation_kwargs,
            )
        return loss, generated[:, prompt_ids.shape[1] :], labels


def stage_settings(stage_config: StageConfig) -> dict:
    """What the run's preset gives this stage: ``model``, ``processor`` and ``training``
    (:func:`cxrgen.presets.stage_preset`)."""
    return stage_preset(STAGE_NAME, stage_config.preset or DEFAULT_PRESET, TrrgConfig)


def model_options(stage_config: StageConfig, base: dict | None = None) -> tuple[dict, dict, dict]:
    """(TrrgConfig kwargs, extra options {language_model, vision_encoder, lora, load_in_4bit}, processor options)
    from ``base`` (the :func:`stage_settings`, read when None) and the YAML sections."""
    base = stage_settings(stage_config) if base is None else base
    options = merge_model_options(base["model"], stage_config.model, TrrgConfig, MODEL_KEYS, stage_config.source)
    extra = {key: options.pop(key, None) for key in MODEL_KEYS}
    lora = extra["lora"]
    if lora is not None:
        if not isinstance(lora, dict) or set(lora) - set(LORA_KEYS):
            raise ValueError(
                f"{stage_config.source}: model.lora must be null or a mapping with keys among {list(LORA_KEYS)}, "
                f"got {lora!r}."
            )
        extra["lora"] = {"r": 16, "alpha": 32, "dropout": 0.05, **lora}
    if extra["load_in_4bit"] not in (None, False, True):
        raise ValueError(
            f"{stage_config.source}: model.load_in_4bit must be true or false, got {extra['load_in_4bit']!r}."
        )
    extra["load_in_4bit"] = bool(extra["load_in_4bit"])
    if extra["clue_threshold_calibration"] not in CLUE_THRESHOLD_CALIBRATIONS:
        raise ValueError(
            f"{stage_config.source}: model.clue_threshold_calibration must be null or train_f1, got "
            f"{extra['clue_threshold_calibration']!r}."
        )
    if extra["clue_threshold_calibration"] is not None and "clue_threshold" in stage_config.model:
        raise ValueError(
            f"{stage_config.source}: model.clue_threshold and model.clue_threshold_calibration exclude each other (the "
            "calibration sets the thresholds)."
        )
    if extra["load_in_4bit"] and lora is None:
        raise ValueError(
            f"{stage_config.source}: model.load_in_4bit trains LoRA adapters on frozen 4-bit weights; "
            "set model.lora too."
        )
    settings = {**base["processor"], **stage_config.section("processor", PROCESSOR_KEYS)}
    return options, extra, settings


def build_llm_tokenizer(
    language_model: str | os.PathLike | None, train_reports: Iterable[str], settings: dict, prompt: str
) -> PreTrainedTokenizerBase:
    """The LLM tokenizer with ``<image>``/``<clue>`` (and a pad token): the checkpoint's, or a word-level one built
    from the training reports (and the prompt, whose words are always in its vocabulary)."""
    if language_model is None:
        min_frequency = settings.get("min_frequency", 3)
        tokenizer = build_report_tokenizer(
            list(train_reports) + [prompt] * min_frequency,
            min_frequency,
            model_max_length=settings.get("max_length", 160),
        )
    else:
        tokenizer = AutoTokenizer.from_pretrained(language_model)
    missing = [token for token in (IMAGE_TOKEN, CLUE_TOKEN) if token not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"extra_special_tokens": missing}, replace_extra_special_tokens=False)
    if tokenizer.pad_token is None:
        # Padding is masked out of attention and labels, so the EOS embedding can stand in for it.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_model_and_processor(
    stage_config: StageConfig,
    train_reports: Iterable[str],
    init: str | os.PathLike | None = None,
    options: tuple[dict, dict, dict] | None = None,
    allow_pickle: bool = False,
) -> tuple[TrrgForConditionalGeneration, TrrgProcessor, str | None]:
    """A fresh ``TrrgForConditionalGeneration`` (full precision), its ``TrrgProcessor`` and a line saying what
    ``init`` transferred (None without ``init``); ``options`` are the :func:`model_options`, read when None.

    The stage-1 folder ``init`` is loaded with :func:`cxrgen.modeling.loading.load_model_folder`: safetensors only
    unless ``allow_pickle``, and weights that do not fit its config.json are one short error."""
    options, extra, settings = model_options(stage_config) if options is None else options
    options = dict(options)
    prompt = settings.get("prompt", DEFAULT_PROMPT)
    tokenizer = build_llm_tokenizer(extra["language_model"], train_reports, settings, prompt)
    ids = {
        "image_token_id": tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        "clue_token_id": tokenizer.convert_tokens_to_ids(CLUE_TOKEN),
    }
    text_config = options.pop("text_config", None)
    vision_config = options.pop("vision_config", None)
    if extra["language_model"] is None:
        text_config = sub_config(text_config, stage_config.source, "text_config")
        if text_config is None:
            raise ValueError(
                f"{stage_config.source}: without model.language_model, model.text_config must describe the LLM."
            )
        text_config.vocab_size = len(tokenizer)
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            setattr(text_config, name, getattr(tokenizer, name))
        language_model = text_config
    else:
        if text_config is not None:
            raise ValueError(f"{stage_config.source}: model.text_config and model.language_model exclude each other.")
        language_model = extra["language_model"]

    parts = {}
    if init is not None:
        if extra["vision_encoder"] is not None:
            raise ValueError(
                f"{stage_config.source}: model.vision_encoder is not used with --init (stage 1 holds the "
                "vision encoder); remove it."
            )
        stage1 = load_processor(init)
        contrastive = load_model_folder(init, TrrgForContrastivePretraining, allow_pickle=allow_pickle)
        parts.update(contrastive_model=contrastive, contrastive_tokenizer=stage1.tokenizer)
        image_processor = stage1.image_processor
    else:
        vision = (
            check_checkpoint(extra["vision_encoder"], "model.vision_encoder")
            if extra["vision_encoder"] is not None
            else sub_config(vision_config, stage_config.source, "vision_config")
        )
        parts["vision_encoder"] = vision
        image_processor = None
    model = TrrgForConditionalGeneration.from_parts(language_model, **parts, **ids, **options)
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    if image_processor is None:
        size = vision_image_size(model.config.vision_config, settings)
        image_processor = CxrImageProcessor(size={"height": size, "width": size})
    processor = TrrgProcessor.for_model(model.config, image_processor, tokenizer, prompt=prompt)
    transferred = None
    if init is not None:
        head = model.model.zero_shot_head
        transferred = (
            f"TRRG stage-1 folder {Path(init).name}: vision tower "
            f"({sum(p.numel() for p in model.model.vision_tower.parameters())} parameters), zero-shot visual "
            f"projection, temperature and disease prompt embeddings {tuple(head.prompt_embeds.shape)}"
        )
    return model, processor, transferred


def calibrated_clue_thresholds(run: StageRun, options: dict) -> list[float]:
    """Per observation, the threshold at which the zero-shot probabilities of the ``--init`` stage-1 folder reach
    their best F1 against the training split's labels (:func:`cxrgen.evaluation.perception.f1_thresholds`).

    Stage 1 weights the positives of its disease-prompt loss by their rarity, which raises the probabilities of the
    rare observations; at the default 0.5 they fire far more often than the observations occur (on the phantom
    benchmark: 1.5 positive clues per test study against 0.9 true positives), and an LLM that writes what its clues
    say then writes those false findings. The thresholds stay valid for the whole run only while the perception the
    clues come from does not train, so ``options`` (the TrrgConfig kwargs) must keep the vision tower and the
    zero-shot head frozen."""
    if run.init is None:
        raise ValueError(
            f"{run.config.source}: model.clue_threshold_calibration: train_f1 needs --init (the stage-1 folder whose "
            "zero-shot head gives the clues)."
        )
    if not options.get("freeze_vision_tower", False) or not options.get("freeze_zero_shot_head", True):
        raise ValueError(
            f"{run.config.source}: model.clue_threshold_calibration: train_f1 needs freeze_vision_tower: true and "
            "freeze_zero_shot_head: true (thresholds fitted before training hold only for a perception that does "
            "not train)."
        )
    entries = run.annotation["train"]
    studies = [[Path(run.images) / path for path in entry["image_path"]] for entry in entries]
    probabilities = study_probabilities(run.init, studies)
    return f1_thresholds(probabilities, positive_matrix([entry["labels"] for entry in entries]))


def lora_config(model: TrrgForConditionalGeneration, options: dict) -> LoraConfig:
    """peft ``LoraConfig``: the LLM's attention projections adapted, the non-LLM trainable modules saved whole."""
    return LoraConfig(
        r=options["r"],
        lora_alpha=options["alpha"],
        lora_dropout=options["dropout"],
        target_modules=model.lora_target_modules(),
        modules_to_save=list(model.lora_trainable_modules),
        task_type="CAUSAL_LM",
    )


def load_base_model(
    folder: str | os.PathLike, load_in_4bit: bool, device: torch.device
) -> TrrgForConditionalGeneration:
    """The saved full-precision base model, optionally with nf4 LLM weights (non-LLM modules kept by full prefix)."""
    if not load_in_4bit:
        return TrrgForConditionalGeneration.from_pretrained(folder)
    quantization = TrrgForConditionalGeneration.nf4_quantization_config(
        torch.bfloat16 if device.type == "cuda" else torch.float32
    )
    return TrrgForConditionalGeneration.from_pretrained(
        folder, quantization_config=quantization, device_map={"": device}
    )


def peft_model(base: TrrgForConditionalGeneration, extra: dict, args: Seq2SeqTrainingArguments) -> PeftModel:
    """``base`` with LoRA adapters (prepared for k-bit training when its LLM is 4-bit)."""

    if extra["load_in_4bit"]:
        base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=checkpointing_requested(args))
    return get_peft_model(base, lora_config(base, extra["lora"]))


def merged_model(base_folder: str | os.PathLike, adapter_folder: str | os.PathLike) -> TrrgForConditionalGeneration:
    """The full-precision base with the adapter merged in: a plain ``TrrgForConditionalGeneration``."""
    base = load_base_model(base_folder, False, torch.device("cpu"))
    return PeftModel.from_pretrained(base, adapter_folder).merge_and_unload()


class TrrgStage(TrainingStage):
    """TRRG stage 2 (see the module docstring)."""

    name = STAGE_NAME
    title = "TRRG clue-enhanced fine-tuning"
    default_preset = DEFAULT_PRESET
    trainer_class = TrrgTrainer
    backbone_weights_refusal = (
        "the vision tower comes from --init (stage 1) or model.vision_encoder in the config, not backbone_weights."
    )

    def check_config(self, config: StageConfig) -> None:
        data_options(config, balance=True, augment=False)

    def build(self, run: StageRun) -> StageParts:
        """The stage-2 parts; the model is a peft model for LoRA runs."""
        base = stage_settings(run.config)
        options = model_options(run.config, base)
        config_options, extra, settings = options
        if extra["clue_threshold_calibration"] is not None and run.checkpoint is None:
            config_options["clue_threshold"] = calibrated_clue_thresholds(run, config_options)
            logger.info(
                "trrg: clue thresholds (F1-optimal on the training split): %s", config_options["clue_threshold"]
            )
        args = run.training_args({**TRAINING_DEFAULTS, **base["training"]}, Seq2SeqTrainingArguments)
        check_best_metric(args)
        train = run.split("train")
        val = run.eval_split(args)
        data = data_options(run.config, balance=True, augment=False)

        generation = {"num_beams": args.generation_num_beams or 1}
        if args.generation_max_length is not None:
            generation["max_new_tokens"] = args.generation_max_length

        checkpoint, init = run.checkpoint, run.init
        base_folder = Path(run.output) / BASE_MODEL_DIR

        def new_model_and_processor():
            model, processor, transferred = build_model_and_processor(
                run.config, train["report"], init, options, run.allow_pickle
            )
            # The saved model decodes as the run evaluates it, at most generation_max_length new tokens (the
            # generic default, max_length 20 including the prompt, would cut the reports short).
            model.generation_config.update(**generation)
            return model, processor, transferred

        transferred = None
        if extra["lora"] is None:
            if checkpoint is not None:
                model = TrrgForConditionalGeneration.from_pretrained(checkpoint)
                processor = load_processor(checkpoint, TrrgProcessor)
            else:
                model, processor, transferred = new_model_and_processor()
        else:
            # Every process builds the same base (same seed); the first writes it, the others wait and read it back.
            with args.main_process_first(desc="TRRG LoRA base model"):
                if not base_folder.is_dir():
                    if checkpoint is not None:
                        raise ValueError(f"--resume: {base_folder} (the base model of the LoRA run) is missing.")
                    model, processor, transferred = new_model_and_processor()
                    if args.should_save:
                        model.save_pretrained(base_folder)
                        processor.save_pretrained(base_folder)
            processor = load_processor(base_folder, TrrgProcessor)
            model = peft_model(load_base_model(base_folder, extra["load_in_4bit"], args.device), extra, args)
        if transferred is not None:
            logger.info("trrg --init %s: %s", init, transferred)

        lora = extra["lora"]
        setup = {
            "language model": Path(str(extra["language_model"])).name
            if extra["language_model"]
            else "from text_config",
            "fine-tuning": "full"
            if lora is None
            else f"LoRA r={lora['r']} alpha={lora['alpha']} dropout={lora['dropout']}",
            "LLM weights": "nf4 (4-bit)" if extra["load_in_4bit"] else "full precision",
            "best model metric": args.metric_for_best_model if args.load_best_model_at_end else "last checkpoint",
            "evaluation beams": generation["num_beams"],
            "observation-balanced sampling (power)": data["balance_power"] or "off",
            "clue thresholds": "F1-optimal on the training split (stage-1 zero-shot head)"
            if extra["clue_threshold_calibration"]
            else "the config's clue_threshold",
        }
        info = run.card_info(
            args,
            setup,
            initialization=transferred,
            metrics_source_description=(
                f"reports generated for the val split during training (beam search, {generation['num_beams']} beams, "
                f"at most {generation.get('max_new_tokens', 'the generation_config')} new tokens), scored with "
                "cxrgen.evaluation.evaluate_reports (pycocoevalcap NLG metrics; clinical efficacy from the cxrgen "
                "rule-based labeler) against the whole reports"
            ),
        )
        compute_metrics = None
        if val is not None and args.predict_with_generate:
            compute_metrics = report_metrics(GeneratedReports(processor), val["report"])
        return StageParts(
            model=model,
            args=args,
            train_dataset=train,
            eval_dataset=val,
            data_collator=TrrgCollator(processor, max_length=settings.get("max_length")),
            processing_class=processor,
            compute_metrics=compute_metrics,
            info=info,
            # LoRA checkpoints hold the adapter (and the processor), not a model folder to check and card.
            checkpoints_are_model_folders=lora is None,
            trainer_kwargs={"generation_kwargs": generation, "train_sample_weights": sample_weights(train, data)},
        )

    def save(self, trainer: Trainer, output: Path, info: CardInfo) -> Path:
        """The final model folder; for LoRA the merged model, the adapter in ``output/adapter``."""
        if isinstance(trainer.model, PeftModel):
            trainer.save_model(str(output / ADAPTER_DIR))
            if trainer.is_world_process_zero():
                trainer.model = merged_model(output / BASE_MODEL_DIR, output / ADAPTER_DIR)
        return super().save(trainer, output, info)


stage = TrrgStage()
build_trainer = stage.build_trainer
run = stage.run

__all__ = [
    "ADAPTER_DIR",
    "BASE_MODEL_DIR",
    "TRAINING_DEFAULTS",
    "GeneratedReports",
    "TrrgStage",
    "TrrgTrainer",
    "build_model_and_processor",
    "build_trainer",
    "lora_config",
    "merged_model",
    "model_options",
    "run",
    "split_prompts",
]
