"""Hub model cards and publishing of saved model folders."""

from .card import build_model_card, save_model_card
from .publish import ModelFolderError, push_model_folder, validate_model_folder

__all__ = ["ModelFolderError", "build_model_card", "push_model_folder", "save_model_card", "validate_model_folder"]
