"""cxrgen: chest X-ray radiology report generation (CMCRL, TRRG) as Hugging Face transformers models."""

from .modeling import register

__version__ = "0.1.0"

register()
