"""The two model families; `register()` makes the Auto classes and pipelines know them."""

import json
from pathlib import Path


def read_model_config(folder):
    """The ``config.json`` of a saved model folder as a dict.

    Raises:
        FileNotFoundError: the folder has no config.json.
        ValueError: config.json is not valid JSON.
    """
    config_path = Path(folder) / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found: expected a saved model folder with a config.json.")
    try:
        return json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_path} is not valid JSON ({error.msg}).") from error


def register():
    """Register configs, models, image processors and processors of every model family with the Auto classes."""
    from .cmcrl import register as register_cmcrl
    from .trrg import register as register_trrg

    register_cmcrl()
    register_trrg()
