"""cxrgen: chest X-ray radiology report generation (CMCRL, TRRG) as Hugging Face transformers models."""

from importlib.metadata import version as _installed_version

from packaging.version import Version as _Version

# The oldest transformers release the whole test suite passes on: pyproject.toml declares the same floor (a test
# checks), CI installs it.
MIN_TRANSFORMERS_VERSION = "5.18.0"

if not _Version(MIN_TRANSFORMERS_VERSION) <= _Version(_installed_version("transformers")) < _Version("6"):
    raise ImportError(
        f"cxrgen needs transformers>={MIN_TRANSFORMERS_VERSION},<6 but transformers "
        f"{_installed_version('transformers')} is installed: pip install 'transformers>={MIN_TRANSFORMERS_VERSION},<6'"
    )

from .modeling import register  # noqa: E402  (after the version check: it imports transformers)
from .modeling.cmcrl import CmcrlConfig, CmcrlForConditionalGeneration, CmcrlForPreTraining  # noqa: E402
from .modeling.trrg import (  # noqa: E402
    TrrgConfig,
    TrrgContrastiveConfig,
    TrrgForConditionalGeneration,
    TrrgForContrastivePretraining,
)
from .processing.image_processing_cxr import CxrImageProcessor  # noqa: E402
from .processing.processing_cmcrl import CmcrlProcessor  # noqa: E402
from .processing.processing_trrg import TrrgProcessor  # noqa: E402

__version__ = "0.1.0"

register()

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
