"""TRRG: disease-aware contrastive pre-training (stage 1) and clue-enhanced LLM report generation (stage 2)."""

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageTextToText, AutoProcessor

from .configuration_trrg import TrrgConfig, TrrgContrastiveConfig
from .modeling_trrg import TrrgForConditionalGeneration, TrrgForContrastivePretraining, TrrgModel
from .pipeline_trrg import TrrgReportPipeline


def register(image_processor_class: type, processor_class: type) -> None:
    """Make the Auto classes know TRRG and make every save carry its remote code (config, model, processors).

    The processor classes are passed in because they live in ``cxrgen.processing``, outside this self-contained
    folder; :func:`cxrgen.modeling.register` passes ``CxrImageProcessor`` and ``TrrgProcessor``. Idempotent.
    """
    AutoConfig.register(TrrgConfig.model_type, TrrgConfig, exist_ok=True)
    AutoConfig.register(TrrgContrastiveConfig.model_type, TrrgContrastiveConfig, exist_ok=True)
    AutoModel.register(TrrgConfig, TrrgForConditionalGeneration, exist_ok=True)
    AutoModelForImageTextToText.register(TrrgConfig, TrrgForConditionalGeneration, exist_ok=True)
    AutoModel.register(TrrgContrastiveConfig, TrrgForContrastivePretraining, exist_ok=True)
    processors = {"pil": image_processor_class, "torchvision": image_processor_class}
    AutoImageProcessor.register(TrrgConfig, image_processor_classes=processors, exist_ok=True)
    AutoImageProcessor.register(TrrgContrastiveConfig, image_processor_classes=processors, exist_ok=True)
    AutoProcessor.register(TrrgConfig, processor_class, exist_ok=True)

    # A single _auto_class per class: the model's AutoModel entry is pre-seeded in its config instead.
    TrrgConfig.register_for_auto_class()
    TrrgContrastiveConfig.register_for_auto_class()
    TrrgForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
    TrrgForContrastivePretraining.register_for_auto_class("AutoModel")
    image_processor_class.register_for_auto_class("AutoImageProcessor")
    processor_class.register_for_auto_class()


__all__ = [
    "TrrgConfig",
    "TrrgContrastiveConfig",
    "TrrgForConditionalGeneration",
    "TrrgForContrastivePretraining",
    "TrrgModel",
    "TrrgReportPipeline",
    "register",
]
