"""The package's public surface: top-level imports and the TRRG config presets."""

import importlib

import pytest
from transformers import GPT2Config

import cxrgen
from cxrgen.modeling.trrg.configuration_trrg import PRESETS_DIR, TrrgConfig, TrrgContrastiveConfig
from cxrgen.modeling.trrg.modeling_trrg import TrrgForConditionalGeneration
from cxrgen.trainers import trrg, trrg_contrastive
from cxrgen.trainers.stage_config import load_stage_config

HOME_MODULES = {
    "CmcrlConfig": "cxrgen.modeling.cmcrl.configuration_cmcrl",
    "CmcrlForConditionalGeneration": "cxrgen.modeling.cmcrl.modeling_cmcrl",
    "CmcrlForPreTraining": "cxrgen.modeling.cmcrl.modeling_cmcrl",
    "CmcrlProcessor": "cxrgen.processing.processing_cmcrl",
    "CxrImageProcessor": "cxrgen.processing.image_processing_cxr",
    "TrrgConfig": "cxrgen.modeling.trrg.configuration_trrg",
    "TrrgContrastiveConfig": "cxrgen.modeling.trrg.configuration_trrg",
    "TrrgForConditionalGeneration": "cxrgen.modeling.trrg.modeling_trrg",
    "TrrgForContrastivePretraining": "cxrgen.modeling.trrg.modeling_trrg",
    "TrrgProcessor": "cxrgen.processing.processing_trrg",
}
REPORTS = ["The lungs are clear. No pneumothorax.", "There is cardiomegaly. A small right pleural effusion."] * 3


def test_public_classes_import_from_the_package_top_level():
    for name, module in HOME_MODULES.items():
        assert getattr(cxrgen, name) is getattr(importlib.import_module(module), name), name
    assert sorted(cxrgen.__all__) == sorted(HOME_MODULES)
    namespace = {}
    exec("from cxrgen import *", namespace)
    assert set(HOME_MODULES) <= set(namespace)


def test_contrastive_tiny_preset_is_the_config_the_stage1_trainer_builds():
    model, processor = trrg_contrastive.build_model_and_processor(load_stage_config("tiny"), REPORTS)
    tokenizer = processor.tokenizer
    config = TrrgContrastiveConfig.from_preset(
        "tiny", text_config={"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id}
    )
    assert config.to_dict() == model.config.to_dict()


def test_tiny_preset_is_the_config_the_stage2_trainer_builds():
    model, processor, _ = trrg.build_model_and_processor(load_stage_config("tiny"), REPORTS)
    tokenizer = processor.tokenizer
    config = TrrgConfig.from_preset(
        "tiny",
        text_config={
            "vocab_size": len(tokenizer),
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        image_token_id=tokenizer.convert_tokens_to_ids(trrg.IMAGE_TOKEN),
        clue_token_id=tokenizer.convert_tokens_to_ids(trrg.CLUE_TOKEN),
    )
    # the model adds its remote-code entries (auto_map, custom_pipelines) to the config it is given
    assert TrrgForConditionalGeneration(config).config.to_dict() == model.config.to_dict()


def test_paper_presets_are_the_model_defaults_and_tiny_stages_share_the_vision_tower():
    for name in ("iu-xray", "mimic-cxr"):
        assert TrrgContrastiveConfig.from_preset(name).to_dict() == TrrgContrastiveConfig().to_dict()
        assert TrrgConfig.from_preset(name).to_dict() == TrrgConfig().to_dict()
    stage1, stage2 = TrrgContrastiveConfig.from_preset("tiny"), TrrgConfig.from_preset("tiny")
    assert stage1.vision_config.to_dict() == stage2.vision_config.to_dict()
    assert stage1.projection_dim == stage2.projection_dim


def test_preset_overrides_win_and_leave_the_presets_unchanged():
    saved = (PRESETS_DIR / "tiny.yaml").read_text()
    config = TrrgConfig.from_preset("tiny", num_query_tokens=4, image_token_id=5, text_config={"vocab_size": 77})
    assert (config.num_query_tokens, config.image_token_id, config.interaction_hidden_size) == (4, 5, 64)
    # a sub-config mapping is merged into the preset's, unless it names another model_type
    assert (config.text_config.model_type, config.text_config.vocab_size, config.text_config.hidden_size) == (
        "llama",
        77,
        64,
    )
    gpt2 = TrrgConfig.from_preset("tiny", text_config={"model_type": "gpt2", "n_embd": 32, "n_layer": 1, "n_head": 2})
    assert gpt2.text_config.model_type == "gpt2" and not hasattr(gpt2.text_config, "num_key_value_heads")
    given = GPT2Config(n_embd=16, n_layer=1, n_head=2)
    assert TrrgConfig.from_preset("tiny", text_config=given).text_config is given
    stage1 = TrrgContrastiveConfig.from_preset("tiny", projection_dim=16, vision_config={"image_size": 32})
    assert (stage1.projection_dim, stage1.vision_config.image_size, stage1.vision_config.embed_dim) == (16, 32, 32)
    stage1.vision_config.depths.append(1)
    assert TrrgContrastiveConfig.from_preset("tiny").vision_config.depths == [1, 1]
    assert (PRESETS_DIR / "tiny.yaml").read_text() == saved


@pytest.mark.parametrize("config_class", [TrrgConfig, TrrgContrastiveConfig])
def test_unknown_preset_names_the_choices(config_class):
    with pytest.raises(ValueError, match=r"'chexpert'.*\['iu-xray', 'mimic-cxr', 'tiny'\]"):
        config_class.from_preset("chexpert")


def test_read_model_config_names_the_file_of_a_config_that_is_not_an_object(tmp_path):
    from cxrgen.modeling import read_model_config

    (tmp_path / "config.json").write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(ValueError, match=r"config\.json: expected a JSON object of config fields, got a list"):
        read_model_config(tmp_path)
