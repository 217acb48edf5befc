"""Trainer mixins the stages share."""

import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from transformers import PreTrainedModel
from transformers.utils import SAFE_WEIGHTS_NAME

from cxrgen.data.sampling import WeightedEpochSampler


class StageCollatorsMixin:
    """Trainer mixin: ``train_data_collator`` collates the training set and ``eval_data_collator`` the evaluation
    sets, each in place of ``data_collator`` (which collates wherever the other is not given). So training can
    augment while evaluation does not, or evaluation can use a fixed sentence per study while training draws one."""

    def __init__(
        self, *args, train_data_collator: Callable | None = None, eval_data_collator: Callable | None = None, **kwargs
    ):
        super().__init__(*args, **kwargs)
        self.train_data_collator = train_data_collator
        self.eval_data_collator = eval_data_collator

    def _with_collator(self, collator: Callable | None, build_dataloader: Callable[[], DataLoader]) -> DataLoader:
        if collator is None:
            return build_dataloader()
        default_collator, self.data_collator = self.data_collator, collator
        try:
            return build_dataloader()
        finally:
            self.data_collator = default_collator

    def get_train_dataloader(self) -> DataLoader:
        return self._with_collator(self.train_data_collator, super().get_train_dataloader)

    def get_eval_dataloader(self, eval_dataset: Dataset | dict | str | None = None) -> DataLoader:
        return self._with_collator(
            self.eval_data_collator, functools.partial(super().get_eval_dataloader, eval_dataset)
        )


class WeightedSamplingMixin:
    """Trainer mixin: draw training studies by ``train_sample_weights`` when given
    (:class:`cxrgen.data.sampling.WeightedEpochSampler`, seeded by ``args.seed``), else as the Trainer does."""

    def __init__(self, *args, train_sample_weights: Sequence[float] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.train_sample_weights = train_sample_weights

    def _get_train_sampler(self, train_dataset: Dataset | None = None) -> Sampler | None:
        if self.train_sample_weights is None:
            return super()._get_train_sampler(train_dataset)
        return WeightedEpochSampler(self.train_sample_weights, seed=self.args.seed)


class CheckpointReloadMixin:
    """Trainer mixin: reload checkpoints (``--resume``, ``load_best_model_at_end``) through ``from_pretrained``.

    The transformers 5.23 Trainer reloads a checkpoint's model.safetensors with a raw ``load_state_dict(strict=False)``,
    but ``save_pretrained`` writes some sub-models under their legacy key names (Swin: ``attention.self.query`` for
    ``attention.q_proj``) that only ``from_pretrained`` converts back: the vision tower would silently keep its current
    weights (one "unexpected keys" warning). Plain (non-peft, non-DeepSpeed/FSDP) models are reloaded here instead.
    """

    def _reload(self, model: object, folder: str | os.PathLike) -> bool:
        if not (
            isinstance(model, PreTrainedModel)
            and (Path(folder) / SAFE_WEIGHTS_NAME).is_file()
            and not (self.is_deepspeed_enabled or self.is_fsdp_enabled)
        ):
            return False
        loaded = type(model).from_pretrained(folder, dtype=model.dtype)
        model.load_state_dict(loaded.state_dict())
        return True

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        if not self._reload(self.model if model is None else model, resume_from_checkpoint):
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self) -> None:
        if not self._reload(self.model, self.state.best_model_checkpoint):
            super()._load_best_model()


__all__ = ["CheckpointReloadMixin", "StageCollatorsMixin", "WeightedSamplingMixin"]
