"""The model folders a stage writes: every checkpoint and the final folder complete (weights, config with remote
code, processor, model card), and what their cards say."""

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from cxrgen.hub_cards.card import REPORT_GENERATOR, build_model_card, save_model_card
from cxrgen.hub_cards.publish import validate_model_folder
from cxrgen.trainers.metrics import logged_eval_metrics
from cxrgen.trainers.stage_config import StageConfig
from cxrgen.trainers.training_data import is_phantom_annotation

logger = logging.getLogger(__name__)

CARD_KEYS = ("model_name", "repo_id", "dataset_name", "dataset_id", "phantom_data")


@dataclass
class CardInfo:
    """What the model card of a stage's folders says besides the metrics (see ``build_model_card``)."""

    method: str
    model_name: str
    repo_id: str
    dataset_name: str
    dataset_id: str
    is_phantom_data: bool
    training_setup: dict
    initialization: str | None = None
    # The Hub model the weights started from (the card's base_model metadata).
    base_model: str | None = None
    metrics_split: str = "val"
    metrics_source_description: str | None = None
    kind: str = REPORT_GENERATOR
    # Logged metric keys (without "eval_") -> names on the card; None: the report metrics (METRIC_NAMES).
    metric_names: dict[str, str] | None = None


def card_info(
    stage_config: StageConfig,
    annotation: dict,
    data: str | os.PathLike,
    output: str | os.PathLike,
    method: str,
    stage: str,
    training_setup: dict,
    initialization: str | None = None,
    metrics_source_description: str | None = None,
    kind: str = REPORT_GENERATOR,
    metric_names: dict[str, str] | None = None,
    base_model: str | None = None,
) -> CardInfo:
    """The :class:`CardInfo` of a run: YAML ``card`` values, else defaults from the data and the output folder."""
    card = stage_config.section("card", CARD_KEYS)
    detected = is_phantom_annotation(annotation)
    phantom = card.get("phantom_data", detected)
    if not isinstance(phantom, bool):
        raise ValueError(f"{stage_config.source}: card.phantom_data must be true or false, got {phantom!r}.")
    if phantom != detected:
        logger.warning(
            "card.phantom_data=%s although the annotation %s like a phantom benchmark.",
            phantom,
            "looks" if detected else "does not look",
        )
    default_dataset = "cxrgen-phantom" if phantom else Path(data).resolve().parent.name or "dataset"
    name = Path(output).resolve().name
    return CardInfo(
        method=method,
        model_name=card.get("model_name", f"{name} ({stage})"),
        repo_id=card.get("repo_id", name),
        dataset_name=card.get("dataset_name", "cxrgen phantom chest X-rays" if phantom else default_dataset),
        dataset_id=card.get("dataset_id", default_dataset),
        is_phantom_data=phantom,
        training_setup={"stage": stage, **training_setup},
        initialization=initialization,
        base_model=base_model,
        metrics_source_description=metrics_source_description,
        kind=kind,
        metric_names=metric_names,
    )


def training_setup(
    stage_config: StageConfig, args: TrainingArguments, annotation: dict, data: str | os.PathLike, **extra: object
) -> dict:
    """The training-setup table of the model card (no paths of this machine: only file names)."""
    return {
        "config": Path(stage_config.source).name
        if stage_config.source.endswith((".yaml", ".yml"))
        else stage_config.source,
        "preset": stage_config.preset or "default",
        "data": Path(data).name,
        "training studies": len(annotation.get("train", [])),
        "optimizer": str(getattr(args.optim, "value", args.optim)),
        "learning rate": args.learning_rate,
        "weight decay": args.weight_decay,
        "schedule": str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)),
        "gradient clipping (max norm)": args.max_grad_norm,
        "batch size per device": args.per_device_train_batch_size,
        "gradient accumulation": args.gradient_accumulation_steps,
        "epochs": args.num_train_epochs if args.max_steps <= 0 else f"max_steps={args.max_steps}",
        "seed": args.seed,
        **extra,
    }


def write_model_card(folder: str | os.PathLike, info: CardInfo, metrics: dict[str, float] | None) -> Path:
    """Build the card of ``folder`` (a saved model with its processor) and save it as its README.md."""
    card = build_model_card(
        folder,
        model_name=info.model_name,
        repo_id=info.repo_id,
        method=info.method,
        metrics=metrics or None,
        dataset_name=info.dataset_name,
        dataset_id=info.dataset_id,
        dataset_split=info.metrics_split,
        metrics_source_description=info.metrics_source_description if metrics else None,
        is_phantom_data=info.is_phantom_data,
        training_setup=info.training_setup,
        base_model=info.base_model,
        initialization=info.initialization,
        kind=info.kind,
    )
    return save_model_card(card, folder)


def _complete_folder(folder: Path, info: CardInfo, log_history: list[dict], step: int) -> None:
    """Check a folder the Trainer saved and write its card with the metrics of evaluating at ``step``."""
    if info.kind == REPORT_GENERATOR:
        # The backbone classifier is made of native transformers classes: it has no remote code or processor.
        validate_model_folder(folder, card=False, processor=True, training_state=True)
    write_model_card(folder, info, logged_eval_metrics(log_history, step, info.metric_names))


class ModelFolderCallback(TrainerCallback):
    """Makes every checkpoint a complete model folder. The Trainer already writes the safetensors weights, the config
    (with ``auto_map`` and ``custom_pipelines``), the remote code of model and processor and the processor itself
    (given as ``processing_class``); this adds the model card, with the evaluation metrics of that step if any."""

    def __init__(self, info: CardInfo):
        self.info = info

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs) -> None:
        """Check the checkpoint just saved and write its card."""
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            _complete_folder(folder, self.info, state.log_history, state.global_step)


def save_final_model(trainer: Trainer, output: str | os.PathLike, info: CardInfo) -> Path:
    """Save the trained model (the best checkpoint's weights when ``load_best_model_at_end``) with its processor,
    remote code, trainer state and card into ``output``; the card reports the evaluation metrics of that model."""
    output = Path(output)
    trainer.save_model(str(output))
    trainer.save_state()
    if trainer.is_world_process_zero():
        # training_args.bin is a pickle: the final folder is the one users load and publish, and it must hold
        # nothing that unpickles (checkpoints keep theirs for --resume).
        (output / "training_args.bin").unlink(missing_ok=True)
        state = trainer.state
        step = state.global_step
        if state.best_model_checkpoint is not None and trainer.args.load_best_model_at_end:
            step = int(Path(state.best_model_checkpoint).name.split("-")[-1])
        _complete_folder(output, info, state.log_history, step)
    return output


__all__ = [
    "CARD_KEYS",
    "CardInfo",
    "ModelFolderCallback",
    "card_info",
    "save_final_model",
    "training_setup",
    "write_model_card",
]
