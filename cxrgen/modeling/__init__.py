"""The two model families, registered with the Auto classes when this package is imported.

Python runs this module before any model folder (``cxrgen.modeling.cmcrl``, ``cxrgen.modeling.trrg.configuration_trrg``,
...), so code holding a model or config class always finds the Auto classes knowing it; ``cxrgen.<public name>``
imports this module first for the processor classes too.
"""

import json
import os
from pathlib import Path

from ..processing.image_processing_cxr import CxrImageProcessor
from ..processing.processing_cmcrl import CmcrlProcessor
from ..processing.processing_trrg import TrrgProcessor
from . import cmcrl, trrg


def read_model_config(folder: str | os.PathLike) -> dict:
    """The ``config.json`` of a saved model folder as a dict.

    Raises:
        FileNotFoundError: the folder has no config.json.
        ValueError: config.json is not valid JSON, or not a JSON object.
    """
    config_path = Path(folder) / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: expected a saved model folder with a config.json.")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_path} is not valid JSON ({error.msg}).") from error
    if not isinstance(config, dict):
        raise ValueError(f"{config_path}: expected a JSON object of config fields, got a {type(config).__name__}.")
    return config


def register() -> None:
    """Register configs, models, image processors and processors of every model family with the Auto classes.

    Runs on import; calling it again is harmless.
    """
    cmcrl.register(CxrImageProcessor, CmcrlProcessor)
    trrg.register(CxrImageProcessor, TrrgProcessor)


register()
