"""TRRG: disease-aware contrastive pre-training (stage 1) and clue-enhanced LLM report generation (stage 2)."""

from .configuration_trrg import CONTRASTIVE_PRESETS, PRESETS, TrrgConfig, TrrgContrastiveConfig
from .modeling_trrg import TrrgForConditionalGeneration, TrrgForContrastivePretraining, TrrgModel
from .pipeline_trrg import TrrgReportPipeline


def register():
    """Make the Auto classes know TRRG and make every save carry its remote code (config, model, processors)."""
    from transformers import (
        AutoConfig,
        AutoImageProcessor,
        AutoModel,
        AutoModelForImageTextToText,
        AutoProcessor,
    )

    from ...processing.image_processing_cxr import CxrImageProcessor
    from ...processing.processing_trrg import TrrgProcessor

    AutoConfig.register(TrrgConfig.model_type, TrrgConfig, exist_ok=True)
    AutoConfig.register(TrrgContrastiveConfig.model_type, TrrgContrastiveConfig, exist_ok=True)
    AutoModel.register(TrrgConfig, TrrgForConditionalGeneration, exist_ok=True)
    AutoModelForImageTextToText.register(TrrgConfig, TrrgForConditionalGeneration, exist_ok=True)
    AutoModel.register(TrrgContrastiveConfig, TrrgForContrastivePretraining, exist_ok=True)
    processors = {"pil": CxrImageProcessor, "torchvision": CxrImageProcessor}
    AutoImageProcessor.register(TrrgConfig, image_processor_classes=processors, exist_ok=True)
    AutoImageProcessor.register(TrrgContrastiveConfig, image_processor_classes=processors, exist_ok=True)
    AutoProcessor.register(TrrgConfig, TrrgProcessor, exist_ok=True)

    # A single _auto_class per class: the model's AutoModel entry is pre-seeded in its config instead.
    TrrgConfig.register_for_auto_class()
    TrrgContrastiveConfig.register_for_auto_class()
    TrrgForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
    TrrgForContrastivePretraining.register_for_auto_class("AutoModel")
    CxrImageProcessor.register_for_auto_class("AutoImageProcessor")
    TrrgProcessor.register_for_auto_class()


__all__ = [
    "CONTRASTIVE_PRESETS",
    "PRESETS",
    "TrrgConfig",
    "TrrgContrastiveConfig",
    "TrrgForConditionalGeneration",
    "TrrgForContrastivePretraining",
    "TrrgModel",
    "TrrgReportPipeline",
    "register",
]
