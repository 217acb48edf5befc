"""Tiny saved CMCRL and TRRG model folders (untrained, with processor and model card) for the figure and app tests."""

import torch
from test_trrg_common import IMAGE_SIZE as TRRG_IMAGE_SIZE
from test_trrg_common import build_tokenizer as build_trrg_tokenizer
from test_trrg_common import trrg_config

from cxrgen.hub_cards import build_model_card, save_model_card
from cxrgen.modeling.cmcrl import CmcrlConfig, CmcrlForConditionalGeneration
from cxrgen.modeling.trrg import TrrgForConditionalGeneration
from cxrgen.processing.cleaning import clean_report
from cxrgen.processing.image_processing_cxr import CxrImageProcessor
from cxrgen.processing.processing_cmcrl import CmcrlProcessor
from cxrgen.processing.processing_trrg import TrrgProcessor
from cxrgen.processing.tokenization import build_report_tokenizer

CMCRL_IMAGE_SIZE = 32  # the tiny preset: a 4 x 4 feature grid per view
REPORTS = [
    "The heart is normal in size. The lungs are clear. No pleural effusion or pneumothorax.",
    "Mild cardiomegaly. Small left pleural effusion. No pneumothorax.",
    "Right lower lobe consolidation, concerning for pneumonia. No effusion.",
]


def save_phantom_card(folder, method, name, repo_id=None):
    """Write the phantom-data card of an untrained test model into ``folder``."""
    card = build_model_card(
        folder,
        model_name=name,
        repo_id=repo_id or f"cxrgen-test/{method}-app",
        method=method,
        metrics=None,
        dataset_name="cxrgen phantom (synthetic)",
        dataset_id="cxrgen-phantom-synthetic",
        dataset_split="test",
        metrics_source_description=None,
        is_phantom_data=True,
        training_setup="untrained test model",
    )
    save_model_card(card, folder)


def save_cmcrl_folder(folder, seed=0):
    """An untrained tiny CMCRL (32 px, 4 x 4 grid, VDM and LDM on) with its processor and card; returns the folder."""
    tokenizer = build_report_tokenizer([clean_report(r) for r in REPORTS], min_frequency=1, model_max_length=16)
    processor = CmcrlProcessor(
        CxrImageProcessor(size={"height": CMCRL_IMAGE_SIZE, "width": CMCRL_IMAGE_SIZE}), tokenizer
    )
    torch.manual_seed(seed)
    model = CmcrlForConditionalGeneration(CmcrlConfig.from_preset("tiny", vocab_size=len(tokenizer))).eval()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    save_phantom_card(folder, "cmcrl", "tiny CMCRL")
    return folder


def save_trrg_folder(folder, seed=0):
    """An untrained tiny TRRG (Llama-style LLM, top-3 clues) with its processor and card; returns the folder."""
    torch.manual_seed(seed)
    config = trrg_config("llama", clue_selection="topk", clue_top_k=3)
    TrrgForConditionalGeneration(config).eval().save_pretrained(folder)
    image_processor = CxrImageProcessor(size={"height": TRRG_IMAGE_SIZE, "width": TRRG_IMAGE_SIZE})
    TrrgProcessor.for_model(config, image_processor, build_trrg_tokenizer()).save_pretrained(folder)
    save_phantom_card(folder, "trrg", "tiny TRRG")
    return folder
