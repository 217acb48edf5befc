"""cxrgen: chest X-ray radiology report generation (CMCRL, TRRG) as Hugging Face transformers models."""

from importlib import import_module as _import_module
from importlib.metadata import version as _installed_version
from typing import TYPE_CHECKING

from packaging.version import Version as _Version

# The oldest transformers release the whole test suite passes on: pyproject.toml declares the same floor (a test
# checks), CI installs it.
MIN_TRANSFORMERS_VERSION = "5.18.0"

if not _Version(MIN_TRANSFORMERS_VERSION) <= _Version(_installed_version("transformers")) < _Version("6"):
    raise ImportError(
        f"cxrgen needs transformers>={MIN_TRANSFORMERS_VERSION},<6 but transformers "
        f"{_installed_version('transformers')} is installed: pip install 'transformers>={MIN_TRANSFORMERS_VERSION},<6'"
    )

if TYPE_CHECKING:  # static analysers and IDEs see the names; at run time __getattr__ imports them
    from .modeling import register as register  # public, though not in __all__
    from .modeling.cmcrl import CmcrlConfig, CmcrlForConditionalGeneration, CmcrlForPreTraining
    from .modeling.trrg import (
        TrrgConfig,
        TrrgContrastiveConfig,
        TrrgForConditionalGeneration,
        TrrgForContrastivePretraining,
    )
    from .processing.image_processing_cxr import CxrImageProcessor
    from .processing.processing_cmcrl import CmcrlProcessor
    from .processing.processing_trrg import TrrgProcessor

__version__ = "0.1.0"

# Public name -> home module. Resolved on first access, so that `import cxrgen.labels` (or the labeler, the metrics)
# loads neither torch nor transformers; `cxrgen.modeling` registers both families with the Auto classes on import.
_LAZY_NAMES = {
    "CmcrlConfig": "cxrgen.modeling.cmcrl",
    "CmcrlForConditionalGeneration": "cxrgen.modeling.cmcrl",
    "CmcrlForPreTraining": "cxrgen.modeling.cmcrl",
    "CmcrlProcessor": "cxrgen.processing.processing_cmcrl",
    "CxrImageProcessor": "cxrgen.processing.image_processing_cxr",
    "TrrgConfig": "cxrgen.modeling.trrg",
    "TrrgContrastiveConfig": "cxrgen.modeling.trrg",
    "TrrgForConditionalGeneration": "cxrgen.modeling.trrg",
    "TrrgForContrastivePretraining": "cxrgen.modeling.trrg",
    "TrrgProcessor": "cxrgen.processing.processing_trrg",
    "register": "cxrgen.modeling",
}

__all__ = [
    "CmcrlConfig",
    "CmcrlForConditionalGeneration",
    "CmcrlForPreTraining",
    "CmcrlProcessor",
    "CxrImageProcessor",
    "TrrgConfig",
    "TrrgContrastiveConfig",
    "TrrgForConditionalGeneration",
    "TrrgForContrastivePretraining",
    "TrrgProcessor",
]


def __getattr__(name: str) -> object:
    """Import the home module of a public name on first access (registering the model families), then cache it."""
    if name not in _LAZY_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # A processor class is usable with the Auto classes only once the families are registered.
    _import_module("cxrgen.modeling")
    value = getattr(_import_module(_LAZY_NAMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_NAMES))
