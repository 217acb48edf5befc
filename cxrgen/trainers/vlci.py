"""Stage 2 of CMCRL: VLCI fine-tuning of ``CmcrlForConditionalGeneration`` on the HF ``Seq2SeqTrainer``.

Evaluation generates a report for every study of the ``val`` split (beam search, ``generation_num_beams`` beams, up
to ``generation_max_length`` tokens; defaults from the model config) and scores it with
``cxrgen.evaluation.metrics.evaluate_reports`` against the whole reference report, cleaned as the processor cleans
its training targets (never against the truncated labels). The metrics are logged as ``eval_bleu_1`` ..
``eval_bleu_4``, ``eval_meteor``, ``eval_rouge_l``, ``eval_cider`` and ``eval_ce_<micro|macro|example>_<precision|
recall|f1>``; ``metric_for_best_model`` (default ``bleu_4``, e.g. ``ce_macro_f1``) picks the checkpoint that is
loaded at the end and saved as the final model.

``init`` starts from a RadCARE folder (``CmcrlForConditionalGeneration.from_pretraining``): its processor (and so its
vocabulary, e.g. the mixed IU-Xray + MIMIC-CXR one of the ``radcare-mixed`` preset) is reused, its reports truncated
at this config's ``max_report_length``, and the transfer report (copied / fresh / unused tensors) is logged and put on
the card; its backbone is the one RadCARE trained (from ``backbone_weights`` there, e.g. ImageNet). Any other model
folder is taken as vision backbone weights (``load_backbone_weights``; e.g. from ``cxrgen train backbone`` or a local
ResNet), and the rest of the model starts fresh; ``backbone_weights`` (a folder or a Hub id such as
``microsoft/resnet-101``) does the same without ``init``. ``init`` and ``backbone_weights`` together are refused.

``data: {balance_power: p}`` draws training studies by the rarity of their positive observations
(:func:`cxrgen.data.sampling.observation_balance_weights`; 0, the default, draws them uniformly).

Defaults (the reference's fine-tuning config): lr 1e-5 held constant, weight decay 5e-5, 10 epochs, batch 16,
evaluation and a checkpoint per epoch. The reference uses Adam with AMSGrad (L2 weight decay) and clips gradients
by value at 0.1; here it is the Trainer's AdamW (decoupled weight decay) and gradient-norm clipping
(``max_grad_norm``, 1.0).
"""

import logging
import os
from pathlib import Path

from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments
from transformers.trainer_utils import EvalLoopOutput

from cxrgen.data.collators import StudyCollator
from cxrgen.evaluation.report import reference_reports
from cxrgen.hub_cards.card import card_base_model
from cxrgen.modeling import read_model_config
from cxrgen.modeling.cmcrl import CmcrlConfig, CmcrlForConditionalGeneration
from cxrgen.trainers.arguments import check_best_metric
from cxrgen.trainers.metrics import report_metrics
from cxrgen.trainers.processors import cmcrl_config_and_processor
from cxrgen.trainers.stage import StageParts, StageRun, TrainingStage
from cxrgen.trainers.trainer_mixins import StageCollatorsMixin, WeightedSamplingMixin
from cxrgen.trainers.training_data import data_options, sample_weights

logger = logging.getLogger(__name__)

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


class VlciTrainer(StageCollatorsMixin, WeightedSamplingMixin, Seq2SeqTrainer):
    """A Seq2SeqTrainer that collates the training set with ``train_data_collator`` (with augmentation) and the
    evaluation sets with ``data_collator`` (without), and draws training studies by ``train_sample_weights`` when
    given."""

    def evaluation_loop(self, *args, **kwargs) -> EvalLoopOutput:
        # Seq2SeqTrainer gathers with `gather`, which keeps the samples that distributed evaluation repeats to fill
        # the last batches; the metrics must see each study exactly once, in dataset order, as gather_for_metrics
        # gives them.
        self.gather_function = self.accelerator.gather_for_metrics
        return super().evaluation_loop(*args, **kwargs)


def _is_cmcrl_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a CMCRL model (a RadCARE folder) rather than a vision backbone."""
    try:
        return read_model_config(folder).get("model_type") == CmcrlConfig.model_type
    except (OSError, ValueError) as error:
        raise ValueError(
            f"--init {folder}: {error} Expected a RadCARE model folder or a vision backbone folder."
        ) from error


class VlciStage(TrainingStage):
    """VLCI fine-tuning (see the module docstring)."""

    name = "vlci"
    title = "VLCI fine-tuning"
    trainer_class = VlciTrainer
    backbone_weights_refusal = None

    def build(self, run: StageRun) -> StageParts:
        train = run.split("train")
        init = run.init
        from_radcare = init is not None and _is_cmcrl_folder(init)
        model_config, processor = cmcrl_config_and_processor(
            run.config,
            self.name,
            self.default_preset,
            train["report"],
            run.checkpoint if run.checkpoint is not None else (init if from_radcare else None),
        )
        run.check_views(model_config.num_views)
        defaults = {
            **TRAINING_DEFAULTS,
            "generation_num_beams": model_config.generation_num_beams,
            "generation_max_length": model_config.max_report_length,
        }
        args = run.training_args(defaults, Seq2SeqTrainingArguments)
        check_best_metric(args)
        options = data_options(run.config, balance=True)
        val = run.eval_split(args)

        initialization = None
        if from_radcare:
            model, transfer = CmcrlForConditionalGeneration.from_pretraining(init, config=model_config)
            # RadCARE's card names the Hub model its backbone started from (e.g. ImageNet's); say it here too.
            start = card_base_model(init)
            started = f" (its vision backbone started from {start})" if start else ""
            initialization = f"RadCARE checkpoint {Path(init).name}{started}: {transfer.summary()}"
            logger.info(
                "VLCI --init %s: %s; fresh: %s; unused: %s", init, transfer.summary(), transfer.fresh, transfer.unused
            )
        else:
            model = CmcrlForConditionalGeneration(model_config)
            frozen = " (frozen)" if model_config.freeze_backbone else ""
            if init is not None:
                model.load_backbone_weights(init)
                initialization = f"vision backbone{frozen} from {Path(init).name}; the rest of the model starts fresh"
            elif run.backbone_weights is not None:
                run.load_backbone(model.load_backbone_weights)
                initialization = (
                    f"vision backbone{frozen} from {run.backbone_start}; the rest of the model starts fresh"
                )

        setup = {
            "best model metric": args.metric_for_best_model if args.load_best_model_at_end else "last checkpoint",
            "evaluation beams": args.generation_num_beams,
            "augmentation": options["augment"],
            "observation-balanced sampling (power)": options["balance_power"] or "off",
        }
        info = run.card_info(
            args,
            setup,
            initialization=initialization,
            metrics_source_description=(
                f"reports generated for the val split during training (beam search, {args.generation_num_beams} "
                f"beams, at most {args.generation_max_length} tokens), scored with cxrgen.evaluation.evaluate_reports "
                "(pycocoevalcap NLG metrics; clinical efficacy from the cxrgen rule-based labeler) against the whole "
                "cleaned reports"
            ),
        )
        return StageParts(
            model=model,
            args=args,
            train_dataset=train,
            eval_dataset=val,
            data_collator=StudyCollator(processor, num_views=model_config.num_views),
            processing_class=processor,
            compute_metrics=report_metrics(processor, reference_reports(processor, val["report"]))
            if val is not None
            else None,
            info=info,
            trainer_kwargs={
                "train_data_collator": StudyCollator(
                    processor, num_views=model_config.num_views, augment_seed=args.seed if options["augment"] else None
                ),
                "train_sample_weights": sample_weights(train, options),
            },
        )


stage = VlciStage()
build_trainer = stage.build_trainer
run = stage.run

__all__ = ["TRAINING_DEFAULTS", "VlciStage", "VlciTrainer", "build_trainer", "run"]
