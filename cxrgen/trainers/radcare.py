"""Stage 1 of CMCRL: RadCARE pre-training of ``CmcrlForPreTraining`` on the HF Trainer.

Data: every view of every training study becomes a single-image sample paired with the study's report (the
reference pre-trains on single images too, but draws one random view of each IU-Xray study per epoch; using every
view keeps the epoch deterministic and loses no image).

Tasks: each training micro-batch runs one of "vt2t", "vt2v", "v2v", "t2t", drawn with the model config's
``pretraining_task_probs`` (default 1/3, 1/3, 1/6, 1/6: the reference's p=0.5 "vt2t then vt2v" split in two, and
0.25 each for v2v and t2t) by :class:`cxrgen.data.collators.TaskSchedule` from the run's seed. Each task's mean loss
since the previous log is logged as ``loss_<task>`` next to the Trainer's ``loss``.

Backbone: ``backbone_weights`` (``--backbone-weights``, e.g. ``microsoft/resnet-101`` for the reference's ImageNet
start) loads the vision backbone before training (``CmcrlForPreTraining.load_backbone_weights``), else it starts
random; the card names its start. RadCARE is the first stage and takes no ``--init``. ``microsoft/resnet-101`` is an
ImageNet-1k ResNet-101 v1.5, the architecture of torchvision's, but not known to hold the same weights as the
torchvision ``resnet101(True)`` the reference loads; a local folder converted from those can be given instead.

Mixed data: ``cxrgen prepare mixed`` and the ``radcare-mixed`` preset pre-train on IU-Xray and MIMIC-CXR together with one
vocabulary, as the reference's ``config/vlp.json`` does. The reference's ``MixTokenizer`` keeps IU-Xray words seen 3
times and MIMIC-CXR words seen 10 times, each counted in its own dataset (and, through a typo, reads the IU-Xray
annotation for both); here one threshold of 10 counts both together, and one cleaner (MIMIC style) serves both.

Defaults (``config/vlp.json`` of the reference): AdamW, lr 5e-4, weight decay 1e-2, 30 epochs, batch 64, seed 42,
linear warm-up over the first 10% of steps (3 of 30 epochs), then cosine decay to 0.001 x lr; a checkpoint per epoch.
Differences: the reference uses AMSGrad (the Trainer's AdamW has no switch for it) and clips every gradient element
to [-0.1, 0.1] (``clip_grad_value_``); the Trainer clips the global gradient norm instead (``max_grad_norm``, 1.0
here). Value clipping changes the direction of the update, norm clipping only its length, so the two are not
interchangeable; pass ``--max_grad_norm`` to tune it.
"""

import logging

import torch
from torch import nn
from transformers import Trainer

from cxrgen.data.collators import PretrainingCollator, TaskSchedule, split_views
from cxrgen.modeling.cmcrl import PRETRAINING_TASKS, CmcrlForPreTraining
from cxrgen.trainers.processors import cmcrl_config_and_processor
from cxrgen.trainers.stage import StageParts, StageRun, TrainingStage
from cxrgen.trainers.training_data import data_options

logger = logging.getLogger(__name__)

TRAINING_DEFAULTS = {
    "learning_rate": 5e-4,
    "weight_decay": 1e-2,
    "optim": "adamw_torch",
    "lr_scheduler_type": "cosine_with_min_lr",
    "lr_scheduler_kwargs": {"min_lr_rate": 1e-3},
    "warmup_steps": 0.1,
    "max_grad_norm": 1.0,
    "num_train_epochs": 30,
    "per_device_train_batch_size": 64,
    "seed": 42,
    "save_strategy": "epoch",
    "eval_strategy": "no",
    # The collator builds the model inputs from the rows' images and reports.
    "remove_unused_columns": False,
}


class RadcareTrainer(Trainer):
    """A Trainer that runs each micro-batch on the task of ``task_schedule`` and logs each task's mean loss."""

    def __init__(self, *args, task_schedule: TaskSchedule, **kwargs):
        super().__init__(*args, **kwargs)
        self.task_schedule = task_schedule
        self._micro_batch = (-1, 0)
        # Per task: summed loss and number of micro-batches since the last log.
        self._task_losses = torch.zeros(len(task_schedule.tasks), 2, dtype=torch.float64)

    def training_step(
        self, model: nn.Module, inputs: dict, num_items_in_batch: torch.Tensor | int | None = None
    ) -> torch.Tensor:
        step, index = self._micro_batch
        index = index + 1 if step == self.state.global_step else 0
        self._micro_batch = (self.state.global_step, index)
        task = self.task_schedule.task(self.state.global_step, index)
        return super().training_step(model, {**inputs, "task": task}, num_items_in_batch)

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict,
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, object]:
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if model.training:
            index = self.task_schedule.tasks.index(inputs["task"])
            self._task_losses[index] += torch.tensor([loss.detach().double().item(), 1.0], dtype=torch.float64)
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log (evaluation logs have eval_loss, the final summary train_loss)
            totals = self._task_losses.to(self.args.device)
            if self.args.world_size > 1:
                totals = self.accelerator.reduce(totals, reduction="sum")
            for task, (total, count) in zip(self.task_schedule.tasks, totals.tolist()):
                if count:
                    logs[f"loss_{task}"] = round(total / count, 4)
            self._task_losses.zero_()
        super().log(logs, start_time)


class RadcareStage(TrainingStage):
    """RadCARE pre-training (see the module docstring)."""

    name = "radcare"
    title = "RadCARE pre-training"
    trainer_class = RadcareTrainer
    init_refusal = (
        "radcare is the first CMCRL stage: --init is not used (start from scratch or from --backbone-weights, or "
        "--resume)."
    )
    backbone_weights_refusal = None

    def build(self, run: StageRun) -> StageParts:
        train = run.split("train")
        model_config, processor = cmcrl_config_and_processor(
            run.config, self.name, self.default_preset, train["report"], run.checkpoint
        )
        run.check_views(model_config.num_views)
        args = run.training_args(TRAINING_DEFAULTS)
        options = data_options(run.config)
        model = CmcrlForPreTraining(model_config)
        initialization = None
        if run.backbone_weights is not None:
            run.load_backbone(model.load_backbone_weights)
            initialization = f"vision backbone from {run.backbone_start}; the rest of the model starts fresh"
        samples = split_views(train)
        logger.info("RadCARE: %d training studies -> %d single-view samples", len(train), len(samples))
        setup = {
            "single-view samples": len(samples),
            "task probabilities": dict(zip(PRETRAINING_TASKS, model_config.pretraining_task_probs)),
            "augmentation": options["augment"],
            "backbone weights": run.backbone_start,
        }
        return StageParts(
            model=model,
            args=args,
            train_dataset=samples,
            data_collator=PretrainingCollator(
                processor,
                max_length=model_config.pretraining_max_length,
                augment_seed=args.seed if options["augment"] else None,
            ),
            processing_class=processor,
            info=run.card_info(args, setup, initialization=initialization),
            trainer_kwargs={
                "task_schedule": TaskSchedule(PRETRAINING_TASKS, model_config.pretraining_task_probs, args.seed)
            },
        )


stage = RadcareStage()
build_trainer = stage.build_trainer
run = stage.run

__all__ = ["TRAINING_DEFAULTS", "RadcareStage", "RadcareTrainer", "build_trainer", "run"]
