"""The processors of the stages: loaded back from a model folder, or built for a new CMCRL run."""

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from transformers import AutoProcessor, ProcessorMixin

from cxrgen.modeling.cmcrl import CmcrlConfig
from cxrgen.presets import stage_preset
from cxrgen.processing.cleaning import clean_report
from cxrgen.processing.image_processing_cxr import CxrImageProcessor
from cxrgen.processing.processing_cmcrl import CmcrlProcessor
from cxrgen.processing.tokenization import build_report_tokenizer
from cxrgen.trainers.stage_config import StageConfig

logger = logging.getLogger(__name__)

CMCRL_PROCESSOR_KEYS = ("min_frequency", "cleaning_style")


def load_processor(folder: str | os.PathLike, expected_class: type | None = None) -> ProcessorMixin:
    """The processor saved in a model folder (``processor_config.json``), optionally checked to be of a class."""
    folder = Path(folder)
    if not (folder / "processor_config.json").is_file():
        raise ValueError(f"{folder} has no processor_config.json: expected a model folder saved by a cxrgen stage.")
    processor = AutoProcessor.from_pretrained(folder)
    if expected_class is not None and not isinstance(processor, expected_class):
        raise ValueError(f"{folder}: expected a {expected_class.__name__}, found a {type(processor).__name__}.")
    return processor


def build_cmcrl_processor(
    train_reports: Iterable[str], image_size: int, max_length: int, min_frequency: int = 3, cleaning_style: str = "iu"
) -> CmcrlProcessor:
    """A ``CmcrlProcessor`` whose word-level tokenizer is built from the cleaned training reports (R2Gen protocol:
    words seen fewer than ``min_frequency`` times become [UNK]); images are resized to ``image_size``."""
    tokenizer = build_report_tokenizer(
        [clean_report(report, cleaning_style) for report in train_reports],
        min_frequency=min_frequency,
        model_max_length=max_length,
    )
    image_processor = CxrImageProcessor(size={"height": image_size, "width": image_size})
    return CmcrlProcessor(image_processor, tokenizer, cleaning_style=cleaning_style)


def cmcrl_config_and_processor(
    stage_config: StageConfig,
    stage: str,
    default_preset: str,
    train_reports: Iterable[str],
    processor_folder: str | os.PathLike | None = None,
) -> tuple[CmcrlConfig, CmcrlProcessor]:
    """The ``CmcrlConfig`` (preset + YAML ``model`` overrides, ``vocab_size`` from the tokenizer) and the
    ``CmcrlProcessor`` of a run of CMCRL stage ``stage``: loaded from ``processor_folder`` (a checkpoint to resume, a
    RadCARE folder to start from; its tokenizer then truncates at this config's ``max_report_length``) or built from
    ``train_reports`` with the preset's ``stages.<stage>.processor`` options updated by the YAML ``processor``."""
    overrides = dict(stage_config.model)
    if "vocab_size" in overrides:
        raise ValueError(f"{stage_config.source}: model.vocab_size is set from the report tokenizer; remove it.")
    preset = stage_config.preset or default_preset
    preset_options = stage_preset(stage, preset).get("processor", {})
    unknown = sorted(set(preset_options) - set(CMCRL_PROCESSOR_KEYS))
    if unknown:
        raise ValueError(
            f"preset {preset!r}: unknown key(s) {unknown} in stages.{stage}.processor; expected some of "
            f"{list(CMCRL_PROCESSOR_KEYS)}."
        )
    options = stage_config.section("processor", CMCRL_PROCESSOR_KEYS)
    config = CmcrlConfig.from_preset(preset, **overrides)
    if processor_folder is not None:
        if options:
            logger.warning(
                "The processor comes from %s; the config's 'processor' options are not used.", processor_folder
            )
        processor = load_processor(processor_folder, CmcrlProcessor)
        size = processor.image_processor.size
        if (size["height"], size["width"]) != (config.image_size, config.image_size):
            raise ValueError(
                f"{processor_folder}: its processor resizes images to {size['height']}x{size['width']}, "
                f"the model config expects {config.image_size}x{config.image_size}."
            )
        # A RadCARE folder's tokenizer keeps RadCARE's length; the reports of this stage are as long as its config.
        processor.tokenizer.model_max_length = config.max_report_length
    else:
        processor = build_cmcrl_processor(
            train_reports, config.image_size, config.max_report_length, **{**preset_options, **options}
        )
    config.vocab_size = len(processor.tokenizer)
    return config, processor


__all__ = ["CMCRL_PROCESSOR_KEYS", "build_cmcrl_processor", "cmcrl_config_and_processor", "load_processor"]
