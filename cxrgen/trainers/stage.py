"""The shape every training stage shares (see :mod:`cxrgen.trainers.stage_config` for its entry point and config).

A run loads its config, annotation and run folder, builds its model, processor, data and Trainer arguments, trains
(or resumes) on a Trainer whose checkpoints are complete model folders, and saves the final model folder with its
card. :class:`TrainingStage` does all of it; a stage supplies only what differs: :meth:`TrainingStage.build` (its
model, data and arguments, from a :class:`StageRun`) and, where it needs one, its Trainer class.
"""

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import datasets
from huggingface_hub.utils import HFValidationError, validate_repo_id
from transformers import PreTrainedModel, Trainer, TrainingArguments, set_seed
from transformers.utils import CONFIG_NAME

from cxrgen.allocator import keep_freed_memory
from cxrgen.data.annotation import read_annotation
from cxrgen.data.validation import check_images, check_views_per_study, log_skipped_image_check
from cxrgen.methods import find_stage
from cxrgen.modeling.loading import weights_file
from cxrgen.trainers.arguments import build_training_args, evaluates, remove_previous_run, resume_checkpoint
from cxrgen.trainers.model_folders import CardInfo, ModelFolderCallback, card_info, save_final_model, training_setup
from cxrgen.trainers.stage_config import StageConfig, load_stage_config
from cxrgen.trainers.training_data import load_split

logger = logging.getLogger(__name__)

# The splits a run reads: checked together before the first step, so every bad input comes in one message.
TRAINING_SPLITS = ("train", "val")
Loaded = TypeVar("Loaded")


def check_checkpoint(value: str | os.PathLike, option: str) -> str:
    """``value`` of ``option`` (``backbone_weights``, TRRG's ``model.vision_encoder``, ...) as a transformers
    checkpoint: an existing local model folder (with ``config.json``) or a Hub model id; anything else is a one-line
    error naming the option and the value. Nothing is downloaded here."""
    value = os.fspath(value)
    path = Path(value)
    if path.exists():
        if not (path / CONFIG_NAME).is_file():
            raise ValueError(f"{option} {value}: not a model folder (no {CONFIG_NAME}).")
        return value
    try:
        validate_repo_id(value)
    except HFValidationError:
        raise ValueError(f"{option} {value}: no such folder, and not a Hub model id (org/name).") from None
    return value


def load_checkpoint(load: Callable[[str], Loaded], value: str | os.PathLike, option: str) -> Loaded:
    """``load(value)`` after :func:`check_checkpoint`, with what goes wrong (a Hub that cannot serve the id, a
    checkpoint of another architecture) as a one-line ValueError naming ``option`` and the value."""
    value = check_checkpoint(value, option)
    try:
        return load(value)
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{option} {value}: {reason}") from error


@dataclass
class StageRun:
    """One run of a stage: its loaded config and annotation, the run folder, what it starts from and whether its
    ``init`` folder may hold pickle weights; ``backbone_weights`` (checked) is where the vision backbone starts from.
    """

    stage: "TrainingStage"
    config: StageConfig
    data: str | os.PathLike
    images: str | os.PathLike
    output: str | os.PathLike
    annotation: dict
    checkpoint: str | None
    init: str | os.PathLike | None
    trainer_args: Sequence[str]
    allow_pickle: bool = False
    backbone_weights: str | None = None

    @property
    def preset(self) -> str:
        """The preset the run starts from: the config's, else the stage's default."""
        return self.config.preset or self.stage.default_preset

    def split(self, name: str, required: bool = True) -> datasets.Dataset | None:
        """A split of the run's annotation (see :func:`cxrgen.trainers.training_data.load_split`); its images were
        checked, or the check skipped, when the run started (:meth:`TrainingStage.build_trainer`)."""
        return load_split(self.annotation, self.images, name, required, images_checked=True)

    def check_views(self, num_views: int) -> None:
        """Refuse training or validation studies with more than ``num_views`` images (the model's view count),
        naming each, before any step."""
        check_views_per_study(self.annotation, num_views, splits=TRAINING_SPLITS)

    def eval_split(self, args: TrainingArguments) -> datasets.Dataset | None:
        """The ``val`` split when ``args`` evaluate during training (then it must have studies), else None."""
        return self.split("val") if evaluates(args) else None

    def training_args(
        self, defaults: dict, args_class: type[TrainingArguments] = TrainingArguments
    ) -> TrainingArguments:
        """The run's Trainer arguments: the stage's ``defaults`` < the YAML ``training`` section < the command line.

        The run is seeded with them at once (the Trainer seeds only when it is built), so that the model the stage
        builds next starts from ``args.seed``."""
        args = build_training_args(
            self.output,
            defaults,
            self.config.training,
            self.trainer_args,
            args_class=args_class,
            source=self.config.source,
        )
        set_seed(args.seed)
        return args

    @property
    def backbone_start(self) -> str:
        """What the cards say the vision backbone started from: ``backbone_weights`` (a Hub id as it is, a local
        folder by its name only: no path of this machine goes into a model folder), else "random"."""
        if self.backbone_weights is None:
            return "random"
        return Path(self.backbone_weights).name if Path(self.backbone_weights).exists() else self.backbone_weights

    def load_backbone(self, load: Callable[[str], Loaded]) -> Loaded:
        """``load(backbone_weights)``, its errors one line naming the option (:func:`load_checkpoint`)."""
        return load_checkpoint(load, self.backbone_weights, "backbone_weights")

    def card_info(self, args: TrainingArguments, setup: dict, **options: object) -> CardInfo:
        """What the run's cards say: the training setup (the common rows, then the stage's ``setup``) and the
        YAML ``card`` values; ``options`` as :func:`cxrgen.trainers.model_folders.card_info` takes them. A
        ``backbone_weights`` Hub id is the card's ``base_model`` (a local folder is no Hub id to link)."""
        rows = training_setup(self.config, args, self.annotation, self.data, **setup)
        if self.backbone_weights is not None and not Path(self.backbone_weights).exists():
            options.setdefault("base_model", self.backbone_weights)
        return card_info(
            self.config, self.annotation, self.data, self.output, self.stage.method, self.stage.title, rows, **options
        )


@dataclass
class StageParts:
    """What :meth:`TrainingStage.build` hands its Trainer: the usual Trainer arguments, the card info, whether each
    checkpoint is a model folder to complete with a card (LoRA checkpoints hold an adapter instead) and the stage
    Trainer's own arguments."""

    model: PreTrainedModel
    args: TrainingArguments
    train_dataset: datasets.Dataset
    data_collator: Callable
    processing_class: object
    info: CardInfo
    eval_dataset: datasets.Dataset | None = None
    compute_metrics: Callable | None = None
    checkpoints_are_model_folders: bool = True
    trainer_kwargs: dict = field(default_factory=dict)


class TrainingStage:
    """A training stage: ``run`` and ``build_trainer`` (the stage module's entry points) around the stage's
    :meth:`build`.

    Class attributes: ``name`` (the stage in :mod:`cxrgen.methods`), ``title`` (what its cards call it),
    ``default_preset`` (when the config names none), ``trainer_class``, ``init_refusal`` (why the stage takes no
    ``--init``; None when it takes one) and ``backbone_weights_refusal`` (why it takes no ``backbone_weights``; None
    for the stages that load a vision backbone from it)."""

    name: str
    title: str
    default_preset: str = "iu-xray"
    trainer_class: type[Trainer] = Trainer
    init_refusal: str | None = None
    backbone_weights_refusal: str | None = "this stage takes no backbone_weights (it loads no vision backbone)."

    @property
    def method(self) -> str:
        """The name of the method the stage trains."""
        return find_stage(self.name)[0].name

    def check_config(self, config: StageConfig) -> None:
        """Refuse (or warn about) config sections the stage does not read, before anything is loaded."""

    def build(self, run: StageRun) -> StageParts:
        """The model, data, processor, Trainer arguments and card info of ``run``."""
        raise NotImplementedError

    def build_trainer(
        self,
        config: str | os.PathLike | dict | StageConfig,
        data: str | os.PathLike,
        images: str | os.PathLike,
        output: str | os.PathLike,
        resume: bool = False,
        init: str | os.PathLike | None = None,
        trainer_args: Sequence[str] = (),
        overwrite: bool = False,
        skip_image_check: bool = False,
        allow_pickle: bool = False,
        backbone_weights: str | os.PathLike | None = None,
    ) -> tuple[Trainer, str | None, CardInfo]:
        """The stage's Trainer for a run, the checkpoint to resume from (None for a fresh run) and the card info
        (arguments as :func:`run` takes them)."""
        if init is not None and self.init_refusal is not None:
            raise ValueError(self.init_refusal)
        stage_config = load_stage_config(config)
        if backbone_weights is not None and stage_config.backbone_weights not in (None, os.fspath(backbone_weights)):
            logger.info(
                "--backbone-weights %s replaces the config's backbone_weights %s.",
                backbone_weights,
                stage_config.backbone_weights,
            )
        backbone_weights = backbone_weights if backbone_weights is not None else stage_config.backbone_weights
        if backbone_weights is not None:
            if self.backbone_weights_refusal is not None:
                raise ValueError(f"{self.name}: {self.backbone_weights_refusal}")
            if init is not None:
                # Two starts for one backbone: the --init folder's backbone would silently win or lose.
                raise ValueError(
                    f"--init {init} already holds a vision backbone; backbone_weights {backbone_weights} would "
                    "replace it. Pass one: backbone_weights to the stage that starts the backbone (RadCARE), --init "
                    "to the stages after it."
                )
            backbone_weights = check_checkpoint(backbone_weights, "backbone_weights")
        if init is not None and (Path(init) / CONFIG_NAME).is_file():
            # The stages load --init with from_pretrained, which would read a pickle file without a word (and fail
            # on a folder without weights with a traceback); a folder without config.json gets the stage's error.
            weights_file(init, allow_pickle)
        self.check_config(stage_config)
        annotation = read_annotation(data)
        checkpoint = resume_checkpoint(output, resume, overwrite)
        if skip_image_check:
            log_skipped_image_check(images)
        else:
            check_images(annotation, images, splits=[split for split in TRAINING_SPLITS if split in annotation])
        run = StageRun(
            self,
            stage_config,
            data,
            images,
            output,
            annotation,
            checkpoint,
            init,
            tuple(trainer_args),
            allow_pickle,
            backbone_weights,
        )
        parts = self.build(run)
        if overwrite:
            # Only now: a config, data or init error above leaves the earlier run as it was.
            remove_previous_run(output)
        trainer = self.trainer_class(
            model=parts.model,
            args=parts.args,
            train_dataset=parts.train_dataset,
            eval_dataset=parts.eval_dataset,
            data_collator=parts.data_collator,
            processing_class=parts.processing_class,
            compute_metrics=parts.compute_metrics,
            callbacks=[ModelFolderCallback(parts.info)] if parts.checkpoints_are_model_folders else [],
            **parts.trainer_kwargs,
        )
        return trainer, checkpoint, parts.info

    def run(
        self,
        config: str | os.PathLike | dict | StageConfig,
        data: str | os.PathLike,
        images: str | os.PathLike,
        output: str | os.PathLike,
        resume: bool = False,
        init: str | os.PathLike | None = None,
        trainer_args: Sequence[str] = (),
        overwrite: bool = False,
        skip_image_check: bool = False,
        allow_pickle: bool = False,
        backbone_weights: str | os.PathLike | None = None,
    ) -> Path:
        """Train the stage and save the final (best, when ``load_best_model_at_end``) model folder in ``output``
        (see :mod:`cxrgen.trainers.stage_config` for the arguments). Training keeps the memory each step frees for
        the next one (:func:`cxrgen.allocator.keep_freed_memory`)."""
        trainer, checkpoint, info = self.build_trainer(
            config,
            data,
            images,
            output,
            resume,
            init,
            trainer_args,
            overwrite,
            skip_image_check,
            allow_pickle,
            backbone_weights,
        )
        keep_freed_memory()
        trainer.train(resume_from_checkpoint=checkpoint)
        return self.save(trainer, Path(output), info)

    def save(self, trainer: Trainer, output: Path, info: CardInfo) -> Path:
        """Save the trained model as the final model folder (:func:`cxrgen.trainers.model_folders.save_final_model`);
        a stage that writes more there extends it."""
        return save_final_model(trainer, output, info)


__all__ = ["StageParts", "StageRun", "TrainingStage", "check_checkpoint", "load_checkpoint"]
