"""Loading a saved model folder with errors a person can act on.

``from_pretrained`` answers a config.json that does not fit its weights with a table of every parameter (hundreds of
lines) and then a ``RuntimeError``, a folder without weights with an ``OSError``, and loads a pickle
``pytorch_model.bin`` without notice. :func:`load_model_folder` loads safetensors weights only unless the caller opts
in, and turns each of these into one :class:`ModelFolderError` naming the folder, the parameter or file, and both
values.
"""

import logging
import os
from pathlib import Path

from transformers import AutoModel

SAFETENSORS_FILES = ("model.safetensors", "model.safetensors.index.json")
PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
_MODELING_LOGGER = "transformers.modeling_utils"

logger = logging.getLogger(__name__)


class ModelFolderError(ValueError):
    """A model folder whose files cannot be loaded as they are; the message names the folder and the file or field."""


class _DropLoadReport(logging.Filter):
    # The report lists every differing parameter; the error raised instead names the first and counts the rest.
    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()


def weights_file(folder: str | os.PathLike, allow_pickle: bool = False) -> Path:
    """The weights file ``from_pretrained`` would read in ``folder``: safetensors first, pickle only if allowed.

    Raises:
        ModelFolderError: the folder has no weights, or only pickle weights and ``allow_pickle`` is False.
    """
    folder = Path(folder)
    for name in SAFETENSORS_FILES + (PICKLE_FILES if allow_pickle else ()):
        if (folder / name).is_file():
            return folder / name
    pickles = [name for name in PICKLE_FILES if (folder / name).is_file()]
    if pickles:
        raise ModelFolderError(
            f"{folder} holds only pickle weights ({', '.join(pickles)}), and loading a pickle file can run any code "
            "it contains. Save the model again as model.safetensors (model.save_pretrained(folder)), or, if you "
            "trust where the file comes from, pass allow_pickle=True (--allow-pickle)."
        )
    raise ModelFolderError(
        f"{folder} has no model weights: expected {SAFETENSORS_FILES[0]} (or {SAFETENSORS_FILES[1]} with its shards) "
        "next to config.json, as save_pretrained writes them."
    )


def load_model_folder(folder: str | os.PathLike, model_class=AutoModel, allow_pickle: bool = False, **kwargs):
    """Load the model of a saved folder with ``model_class.from_pretrained`` (default ``AutoModel``).

    Only safetensors weights are read unless ``allow_pickle`` (as ``use_safetensors=True``); other keyword arguments
    go to ``from_pretrained``.

    Raises:
        ModelFolderError: no weights file, pickle weights without ``allow_pickle``, or weights that do not fit the
            model config.json describes (a parameter of another shape, or missing). Weights the model does not use
            (a module switched off in config.json) are logged as a warning.
    """
    folder = Path(folder)
    weights = weights_file(folder, allow_pickle)
    modeling_logger = logging.getLogger(_MODELING_LOGGER)
    report_filter = _DropLoadReport()
    modeling_logger.addFilter(report_filter)
    try:
        model, info = model_class.from_pretrained(
            folder,
            use_safetensors=None if allow_pickle else True,
            ignore_mismatched_sizes=True,  # checked below, with one readable error instead of the table
            output_loading_info=True,
            **kwargs,
        )
    finally:
        modeling_logger.removeFilter(report_filter)
    _check_loading_info(folder, weights.name, model.config.to_dict(), info)
    return model


def _check_loading_info(folder: Path, weights: str, config: dict, info: dict) -> None:
    where = f"{folder}: config.json does not match the weights in {weights}"
    mismatched = sorted(info["mismatched_keys"])
    if mismatched:
        name, stored, expected = mismatched[0]
        stored, expected = tuple(stored), tuple(expected)
        fields = _fields_with_values(config, {e for s, e in zip(stored, expected) if s != e} or set(expected))
        hint = f" (config.json field(s) {', '.join(fields)})" if fields else ""
        more = f"; {len(mismatched) - 1} more parameter(s) differ" if len(mismatched) > 1 else ""
        raise ModelFolderError(
            f"{where}: parameter '{name}' has shape {stored} in the weights but {expected} in the model config.json "
            f"describes{hint}{more}. Use the config.json saved with these weights."
        )
    missing, unexpected = sorted(info["missing_keys"]), sorted(info["unexpected_keys"])
    if missing:
        raise ModelFolderError(
            f"{where}: {len(missing)} parameter(s) the model needs are not in the weights (e.g. '{missing[0]}'), so "
            "they would start untrained; a size such as the number of layers differs. Use the config.json saved "
            "with these weights."
        )
    if unexpected:
        # A config may switch off a trained module on purpose (an ablation); its weights are then left unused.
        logger.warning(
            "%s: %d parameter(s) in %s are not used by the model config.json describes (e.g. '%s'); a module is "
            "switched off or a size differs.",
            folder,
            len(unexpected),
            weights,
            unexpected[0],
        )


def _fields_with_values(config: dict, values: set, prefix: str = "") -> list[str]:
    """Config fields (nested ones dotted) holding one of ``values``: the likely cause of a shape difference."""
    fields = []
    for key, value in config.items():
        if isinstance(value, dict):
            fields += _fields_with_values(value, values, f"{prefix}{key}.")
        elif isinstance(value, int) and not isinstance(value, bool) and value in values:
            fields.append(f"{prefix}{key}={value}")
    return fields


__all__ = ["ModelFolderError", "load_model_folder", "weights_file"]
