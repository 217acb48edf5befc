"""Stage-wise training on the HF Trainer: one module per stage (see :data:`cxrgen.trainers.stage_config.STAGES`),
each a :class:`cxrgen.trainers.stage.TrainingStage` exposing
``run(config, data, images, output, resume=False, init=None, trainer_args=()) -> Path``."""

from .stage_config import STAGES, get_stage

__all__ = ["STAGES", "get_stage"]
