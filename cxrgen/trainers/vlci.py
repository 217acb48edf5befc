"""Stage 2 of CMCRL: VLCI fine-tuning of ``CmcrlForConditionalGeneration`` on the HF ``Seq2SeqTrainer``.

Evaluation generates a report for every study of the ``val`` split (beam search, ``generation_num_beams`` beams, up
to ``generation_max_length`` tokens; defaults from the model config) and scores it with
``cxrgen.evaluation.metrics.evaluate_reports`` against the whole reference report, cleaned as the processor cleans
its training targets (never against the truncated labels). The metrics are logged as ``eval_bleu_1`` ..
``eval_bleu_4``, ``eval_meteor``, ``eval_rouge_l``, ``eval_cider`` and ``eval_ce_<micro|macro|example>_<precision|
recall|f1>``; ``metric_for_best_model`` (default ``bleu_4``, e.g. ``ce_macro_f1``) picks the checkpoint that is
loaded at the end and saved as the final model.

``init`` starts from a RadCARE folder (``CmcrlForConditionalGeneration.from_pretraining``): its processor (and so its
vocabulary) is reused, and the transfer report (copied / fresh / unused tensors) is logged and put on the card. Any
other model folder is taken as vision backbone weights (``load_backbone_weights``; e.g. from ``cxrgen train
backbone`` or a local ResNet), and the rest of the model starts fresh.

``data: {balance_power: p}`` draws training studies by the rarity of their positive observations
(:func:`cxrgen.data.sampling.observation_balance_weights`; 0, the default, draws them uniformly).

Defaults (the reference's fine-tuning config): lr 1e-5 held constant, weight decay 5e-5, 10 epochs, batch 16,
evaluation and a checkpoint per epoch. The reference uses Adam with AMSGrad (L2 weight decay) and clips gradients
by value at 0.1; here it is the Trainer's AdamW (decoupled weight decay) and gradient-norm clipping
(``max_grad_norm``, 1.0).
"""

import logging
from pathlib import Path

from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, set_seed

from cxrgen.data.annotation import read_annotation
from cxrgen.data.collators import StudyCollator
from cxrgen.data.sampling import WeightedEpochSampler, observation_balance_weights
from cxrgen.evaluation.report import reference_reports
from cxrgen.methods import find_stage
from cxrgen.modeling import read_model_config
from cxrgen.trainers.common import (
    ModelFolderCallback,
    build_training_args,
    card_info,
    check_best_metric,
    cmcrl_config_and_processor,
    data_options,
    load_split,
    load_stage_config,
    report_metrics,
    resume_checkpoint,
    save_final_model,
    training_setup,
)

logger = logging.getLogger(__name__)

STAGE = "vlci"
DEFAULT_PRESET = "iu-xray"
TRAINING_DEFAULTS = {
    "learning_rate": 1e-5,
    "weight_decay": 5e-5,
    "optim": "adamw_torch",
    "lr_scheduler_type": "constant",
    "max_grad_norm": 1.0,
    "num_train_epochs": 10,
    "per_device_train_batch_size": 16,
    "per_device_eval_batch_size": 16,
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "predict_with_generate": True,
    "metric_for_best_model": "bleu_4",
    "load_best_model_at_end": True,
    # The collator builds the model inputs from the rows' images and reports.
    "remove_unused_columns": False,
}


class VlciTrainer(Seq2SeqTrainer):
    """A Seq2SeqTrainer that collates the training set with ``train_data_collator`` (with augmentation) and the
    evaluation sets with ``data_collator`` (without), and draws training studies by ``train_sample_weights`` when
    given (:class:`cxrgen.data.sampling.WeightedEpochSampler`)."""

    def __init__(self, *args, train_data_collator=None, train_sample_weights=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.train_data_collator = train_data_collator
        self.train_sample_weights = train_sample_weights

    def _get_train_sampler(self, train_dataset=None):
        if self.train_sample_weights is None:
            return super()._get_train_sampler(train_dataset)
        return WeightedEpochSampler(self.train_sample_weights, seed=self.args.seed)

    def get_train_dataloader(self):
        if self.train_data_collator is None:
            return super().get_train_dataloader()
        evaluation_collator, self.data_collator = self.data_collator, self.train_data_collator
        try:
            return super().get_train_dataloader()
        finally:
            self.data_collator = evaluation_collator

    def evaluation_loop(self, *args, **kwargs):
        # Seq2SeqTrainer gathers with `gather`, which keeps the samples that distributed evaluation repeats to fill
        # the last batches; the metrics must see each study exactly once, in dataset order, as gather_for_metrics
        # gives them.
        self.gather_function = self.accelerator.gather_for_metrics
        return super().evaluation_loop(*args, **kwargs)


def _is_cmcrl_folder(folder):
    """Whether ``folder`` holds a CMCRL model (a RadCARE folder) rather than a vision backbone."""
    from cxrgen.modeling.cmcrl import CmcrlConfig

    try:
        return read_model_config(folder).get("model_type") == CmcrlConfig.model_type
    except (OSError, ValueError) as error:
        raise ValueError(
            f"--init {folder}: {error} Expected a RadCARE model folder or a vision backbone folder."
        ) from error


def build_trainer(config, data, images, output, resume=False, init=None, trainer_args=()):
    """The VLCI Trainer of a run, the checkpoint to resume from (None for a fresh run) and the card info; see
    :func:`run`."""
    from cxrgen.modeling.cmcrl import CmcrlForConditionalGeneration

    stage_config = load_stage_config(config)
    annotation = read_annotation(data)
    checkpoint = resume_checkpoint(output, resume)
    train = load_split(annotation, images, "train")
    from_radcare = init is not None and _is_cmcrl_folder(init)
    model_config, processor = cmcrl_config_and_processor(
        stage_config,
        DEFAULT_PRESET,
        train["report"],
        checkpoint if checkpoint is not None else (init if from_radcare else None),
    )
    defaults = {
        **TRAINING_DEFAULTS,
        "generation_num_beams": model_config.generation_num_beams,
        "generation_max_length": model_config.max_report_length,
    }
    args = build_training_args(
        output,
        defaults,
        stage_config.training,
        trainer_args,
        args_class=Seq2SeqTrainingArguments,
        source=stage_config.source,
    )
    check_best_metric(args)
    options = data_options(stage_config, balance=True)
    evaluating = str(getattr(args.eval_strategy, "value", args.eval_strategy)) != "no"
    val = load_split(annotation, images, "val", required=evaluating) if evaluating else None

    set_seed(args.seed)
    initialization = None
    if from_radcare:
        model, transfer = CmcrlForConditionalGeneration.from_pretraining(init, config=model_config)
        initialization = f"RadCARE checkpoint {Path(init).name}: {transfer.summary()}"
        logger.info(
            "VLCI --init %s: %s; fresh: %s; unused: %s", init, transfer.summary(), transfer.fresh, transfer.unused
        )
    else:
        model = CmcrlForConditionalGeneration(model_config)
        if init is not None:
            model.load_backbone_weights(init)
            frozen = " (frozen)" if model_config.freeze_backbone else ""
            initialization = f"vision backbone{frozen} from {Path(init).name}; the rest of the model starts fresh"

    setup = training_setup(
        stage_config,
        args,
        annotation,
        data,
        **{
            "best model metric": args.metric_for_best_model if args.load_best_model_at_end else "last checkpoint",
            "evaluation beams": args.generation_num_beams,
            "augmentation": options["augment"],
            "observation-balanced sampling (power)": options["balance_power"] or "off",
        },
    )
    info = card_info(
        stage_config,
        annotation,
        data,
        output,
        find_stage(STAGE)[0].name,
        "VLCI fine-tuning",
        setup,
        initialization=initialization,
        metrics_source_description=(
            f"reports generated for the val split during training (beam search, {args.generation_num_beams} beams, at "
            f"most {args.generation_max_length} tokens), scored with cxrgen.evaluation.evaluate_reports (pycocoevalcap "
            "NLG metrics; clinical efficacy from the cxrgen rule-based labeler) against the whole cleaned reports"
        ),
    )
    trainer = VlciTrainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=val,
        data_collator=StudyCollator(processor, num_views=model_config.num_views),
        train_data_collator=StudyCollator(
            processor, num_views=model_config.num_views, augment_seed=args.seed if options["augment"] else None
        ),
        train_sample_weights=(
            observation_balance_weights(list(train["labels"]), options["balance_power"])
            if options["balance_power"]
            else None
        ),
        processing_class=processor,
        compute_metrics=report_metrics(processor, reference_reports(processor, val["report"]))
        if val is not None
        else None,
        callbacks=[ModelFolderCallback(info)],
    )
    return trainer, checkpoint, info


def run(config, data, images, output, resume=False, init=None, trainer_args=()) -> Path:
    """Fine-tune VLCI and save the final (best, when ``load_best_model_at_end``) model folder in ``output``
    (see cxrgen.trainers.common for the arguments)."""
    trainer, checkpoint, info = build_trainer(config, data, images, output, resume, init, trainer_args)
    trainer.train(resume_from_checkpoint=checkpoint)
    return save_final_model(trainer, output, info)


__all__ = ["TRAINING_DEFAULTS", "VlciTrainer", "build_trainer", "run"]
