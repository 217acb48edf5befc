"""CMCRL: RadCARE pre-training (stage 1) and VLCI report generation with visual and linguistic deconfounding (stage 2)."""

from .configuration_cmcrl import PRESETS, PRETRAINING_TASKS, CmcrlConfig
from .modeling_cmcrl import (
    CmcrlEncoderOutput,
    CmcrlForConditionalGeneration,
    CmcrlForPreTraining,
    CmcrlPreTrainingOutput,
    CmcrlSeq2SeqLMOutput,
    CmcrlTransferReport,
)
from .pipeline_cmcrl import RadiologyReportGenerationPipeline


def register():
    """Make the Auto classes know CMCRL and make every save carry its remote code (config, models, processors)."""
    from transformers import (
        AutoConfig,
        AutoImageProcessor,
        AutoModel,
        AutoModelForImageTextToText,
        AutoModelForPreTraining,
        AutoProcessor,
    )

    from ...processing.image_processing_cxr import CxrImageProcessor
    from ...processing.processing_cmcrl import CmcrlProcessor

    AutoConfig.register(CmcrlConfig.model_type, CmcrlConfig, exist_ok=True)
    AutoModel.register(CmcrlConfig, CmcrlForConditionalGeneration, exist_ok=True)
    AutoModelForImageTextToText.register(CmcrlConfig, CmcrlForConditionalGeneration, exist_ok=True)
    AutoModelForPreTraining.register(CmcrlConfig, CmcrlForPreTraining, exist_ok=True)
    processors = {"pil": CxrImageProcessor, "torchvision": CxrImageProcessor}
    AutoImageProcessor.register(CmcrlConfig, image_processor_classes=processors, exist_ok=True)
    AutoProcessor.register(CmcrlConfig, CmcrlProcessor, exist_ok=True)

    # One _auto_class per class: the config pre-seeds the other auto_map entries (AutoModel, pre-training model).
    CmcrlConfig.register_for_auto_class()
    CmcrlForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
    CmcrlForPreTraining.register_for_auto_class("AutoModelForPreTraining")
    CxrImageProcessor.register_for_auto_class("AutoImageProcessor")
    CmcrlProcessor.register_for_auto_class()


__all__ = [
    "PRESETS",
    "PRETRAINING_TASKS",
    "CmcrlConfig",
    "CmcrlEncoderOutput",
    "CmcrlForConditionalGeneration",
    "CmcrlForPreTraining",
    "CmcrlPreTrainingOutput",
    "CmcrlSeq2SeqLMOutput",
    "CmcrlTransferReport",
    "RadiologyReportGenerationPipeline",
    "register",
]
