"""Stage-wise training on the HF Trainer: one module per stage (see :data:`cxrgen.trainers.common.STAGES`), each
exposing ``run(config, data, images, output, resume=False, init=None, trainer_args=()) -> Path``."""

from .common import STAGES, get_stage

__all__ = ["STAGES", "get_stage"]
