"""Tiny TRRG building blocks shared by the TRRG tests (no downloads), plus config validation tests."""

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import BertConfig, GPT2Config, LlamaConfig, PreTrainedTokenizerFast, Qwen2Config, SwinConfig

from cxrgen.labels import CHEXPERT_OBSERVATIONS
from cxrgen.modeling.trrg.configuration_trrg import CHEXPERT_OBSERVATIONS as TRRG_OBSERVATIONS
from cxrgen.modeling.trrg.configuration_trrg import TrrgConfig, TrrgContrastiveConfig

pytestmark = pytest.mark.transformers_compat

torch.set_num_threads(1)

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<image>", "<clue>"]
WORDS = [
    "the",
    "heart",
    "is",
    "normal",
    "in",
    "size",
    ".",
    "lungs",
    "are",
    "clear",
    "no",
    "pleural",
    "effusion",
    "or",
    "pneumothorax",
    "there",
    "mild",
    "cardiomegaly",
    "small",
    "left",
    "right",
    "edema",
    "opacity",
    "consolidation",
    "atelectasis",
    "pneumonia",
    "support",
    "devices",
    "fracture",
    "lesion",
    "enlarged",
    "cardiomediastinum",
    "other",
    "findings",
    "consistent",
    "with",
    "evidence",
    "of",
    "acute",
    "cardiopulmonary",
    "process",
    "chest",
    "radiograph",
    "abnormal",
    "not",
    "generate",
    "a",
    "report",
    "for",
    "this",
    "x-ray",
    "user",
    "assistant",
    ":",
    "stable",
]
IMAGE_ID, CLUE_ID = 4, 5
IMAGE_SIZE = 32
REPORT = "the heart is normal in size . no pleural effusion or pneumothorax ."


def build_tokenizer():
    """Word-level tokenizer with <image>/<clue> specials; vocabulary of 6 specials + the words above."""
    vocab = {token: i for i, token in enumerate(SPECIALS)}
    for word in WORDS:
        vocab.setdefault(word, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>", "clue_token": "<clue>"},
    )


VOCAB_SIZE = len(build_tokenizer())


def vision_config():
    return SwinConfig(
        image_size=IMAGE_SIZE, patch_size=8, embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=2
    )


def text_config(arch="llama", vocab_size=VOCAB_SIZE, hidden=32, layers=2):
    special = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    if arch == "gpt2":
        return GPT2Config(vocab_size=vocab_size, n_embd=hidden, n_layer=layers, n_head=4, n_positions=256, **special)
    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[arch]
    return cls(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        **special,
    )


def trrg_config(arch="llama", **overrides):
    kwargs = dict(
        vision_config=vision_config(),
        text_config=text_config(arch),
        projection_dim=16,
        num_query_tokens=4,
        interaction_hidden_size=32,
        interaction_layers=1,
        interaction_heads=4,
        image_token_id=IMAGE_ID,
        clue_token_id=CLUE_ID,
    )
    kwargs.update(overrides)
    return TrrgConfig(**kwargs)


def contrastive_config(**overrides):
    bert = BertConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    return TrrgContrastiveConfig(vision_config=vision_config(), text_config=bert, projection_dim=16, **overrides)


def prompt_ids(config, text_ids, batch=1):
    """[<s>, <image> x Q, <clue> x S, *text_ids] repeated `batch` times, as the processor lays prompts out."""
    row = [1] + [IMAGE_ID] * config.num_query_tokens + [CLUE_ID] * config.num_clue_tokens + list(text_ids)
    return torch.tensor([row] * batch)


def pixels(batch=1, views=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, views, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)


def test_observation_copy_matches_labels():
    assert TRRG_OBSERVATIONS == CHEXPERT_OBSERVATIONS


@pytest.mark.parametrize(
    "field, value",
    [
        ("clue_selection", "some"),
        ("multi_view_fusion", "max"),
        ("clue_threshold", [0.5] * 3),
        ("clue_threshold", 1.5),
        ("clue_top_k", 15),
        ("disease_loss_weight", -1.0),
    ],
)
def test_bad_config_values_raise_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        trrg_config(**{field: value})


def test_clue_slots_follow_selection():
    assert trrg_config(clue_selection="threshold").num_clue_tokens == 14
    assert trrg_config(clue_selection="all").num_clue_tokens == 14
    assert trrg_config(clue_selection="topk", clue_top_k=3).num_clue_tokens == 3


def test_contrastive_prompts_cover_every_observation():
    prompts = contrastive_config().disease_prompts()
    assert len(prompts) == 14
    assert all(len(pos) >= 2 and len(neg) >= 2 for pos, neg in prompts)
    assert "no cardiomegaly" in prompts[2][1]
