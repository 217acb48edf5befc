"""CMCRL: RadCARE pre-training (stage 1) and VLCI report generation with visual and linguistic deconfounding (stage 2)."""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageTextToText,
    AutoModelForPreTraining,
    AutoProcessor,
)

from .configuration_cmcrl import PRETRAINING_TASKS, CmcrlConfig
from .modeling_cmcrl import (
    CmcrlEncoderOutput,
    CmcrlForConditionalGeneration,
    CmcrlForPreTraining,
    CmcrlPreTrainingOutput,
    CmcrlSeq2SeqLMOutput,
    CmcrlTransferReport,
)
from .pipeline_cmcrl import RadiologyReportGenerationPipeline


def register(image_processor_class: type, processor_class: type) -> None:
    """Make the Auto classes know CMCRL and make every save carry its remote code (config, models, processors).

    The processor classes are passed in because they live in ``cxrgen.processing``, outside this self-contained
    folder; :func:`cxrgen.modeling.register` passes ``CxrImageProcessor`` and ``CmcrlProcessor``. Idempotent.
    """
    AutoConfig.register(CmcrlConfig.model_type, CmcrlConfig, exist_ok=True)
    AutoModel.register(CmcrlConfig, CmcrlForConditionalGeneration, exist_ok=True)
    AutoModelForImageTextToText.register(CmcrlConfig, CmcrlForConditionalGeneration, exist_ok=True)
    AutoModelForPreTraining.register(CmcrlConfig, CmcrlForPreTraining, exist_ok=True)
    processors = {"pil": image_processor_class, "torchvision": image_processor_class}
    AutoImageProcessor.register(CmcrlConfig, image_processor_classes=processors, exist_ok=True)
    AutoProcessor.register(CmcrlConfig, processor_class, exist_ok=True)

    # One _auto_class per class: the config pre-seeds the other auto_map entries (AutoModel, pre-training model).
    CmcrlConfig.register_for_auto_class()
    CmcrlForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
    CmcrlForPreTraining.register_for_auto_class("AutoModelForPreTraining")
    image_processor_class.register_for_auto_class("AutoImageProcessor")
    processor_class.register_for_auto_class()


__all__ = [
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
