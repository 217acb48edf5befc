"""Presets as data files: listing, loading by name or path, the schema's errors, and remote code without them."""

import importlib.util
import re
import shutil
from pathlib import Path

import pytest
import yaml

from cxrgen.methods import METHODS, get_method
from cxrgen.modeling.cmcrl import CmcrlConfig, configuration_cmcrl
from cxrgen.modeling.trrg import TrrgConfig, TrrgContrastiveConfig
from cxrgen.presets import list_presets, load_preset, stage_preset
from cxrgen.trainers import trrg
from cxrgen.trainers.stage_config import load_stage_config

CONFIG_CLASSES = {"cmcrl": (CmcrlConfig,), "trrg": (TrrgContrastiveConfig, TrrgConfig)}


def presets_dir(method):
    return Path(importlib.import_module(get_method(method).config.partition(":")[0]).__file__).with_name("presets")


def write_preset(tmp_path, document, name="custom.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document))
    return path


def test_list_presets_lists_every_file_of_each_method():
    assert list(list_presets()) == list(METHODS)
    for method in METHODS:
        files = sorted(presets_dir(method).iterdir())
        assert files and all(path.suffix == ".yaml" for path in files)
        assert list_presets(method) == [path.stem for path in files] == list_presets()[method]
    assert {"iu-xray", "mimic-cxr", "tiny"} <= set(list_presets("cmcrl")) & set(list_presets("trrg"))


@pytest.mark.parametrize("method", list(METHODS))
def test_loading_by_name_and_by_path_give_the_same(method):
    for name in list_presets(method):
        path = presets_dir(method) / f"{name}.yaml"
        assert load_preset(method, name) == load_preset(method, path) == load_preset(method, str(path))
        assert isinstance(load_preset(method, name)["description"], str)
        for config_class in CONFIG_CLASSES[method]:
            assert config_class.from_preset(name).to_dict() == config_class.from_preset(path).to_dict()


def test_every_preset_builds_its_configs_and_stage_settings():
    for method, config_classes in CONFIG_CLASSES.items():
        for name in list_presets(method):
            for config_class in config_classes:
                config_class.from_preset(name)
            for stage in get_method(method).stages:
                assert set(stage_preset(stage.name, name)) == set(stage.preset_sections)
        assert "demo" in load_preset(method, get_method(method).demo_preset)


def test_unknown_preset_names_raise_naming_the_choices():
    for method, config_classes in CONFIG_CLASSES.items():
        choices = re.escape(str(list_presets(method)))
        with pytest.raises(ValueError, match=rf"'chexpert'.*{choices}"):
            load_preset(method, "chexpert")
        for config_class in config_classes:
            with pytest.raises(ValueError, match=rf"'chexpert'.*{choices}"):
                config_class.from_preset("chexpert")
    with pytest.raises(ValueError, match=rf"'chexpert'.*{re.escape(str(list_presets('trrg')))}"):
        trrg.model_options(load_stage_config("chexpert"))
    with pytest.raises(ValueError, match=r"no such preset file"):
        load_preset("cmcrl", "missing/preset.yaml")
    with pytest.raises(ValueError, match=r"Unknown method 'r2gen'.*\['cmcrl', 'trrg'\]"):
        list_presets("r2gen")


@pytest.mark.parametrize(
    ("method", "document", "key"),
    [
        ("cmcrl", {"modles": {}}, "modles"),
        ("cmcrl", {"models": {"cmcrl": {"hiden_size": 8}}}, "hiden_size"),
        ("cmcrl", {"models": {"trrg": {}}}, "'models' maps model types"),
        ("cmcrl", {"stages": {"vlci": {"training": {}}}}, r"stages.vlci: unknown key\(s\) \['training'\]"),
        ("trrg", {"stages": {"vlci": {}}}, "'stages' maps stages"),
        ("trrg", {"stages": {"trrg": {"procesor": {}}}}, "procesor"),
        ("trrg", {"models": {"trrg_contrastive": {"projection_dims": 8}}}, "projection_dims"),
        ("cmcrl", {"demo": {"image_size": 8, "num_beams": 1, "stages": [], "steps": 1}}, "steps"),
        (
            "cmcrl",
            {"demo": {"image_size": 8, "num_beams": 1, "stages": [{"stage": "vlci", "title": "x", "trainig": {}}]}},
            "trainig",
        ),
    ],
)
def test_an_unknown_key_of_a_preset_file_names_the_file_and_the_key(tmp_path, method, document, key):
    path = write_preset(tmp_path, {"description": "a test preset", **document})
    with pytest.raises(ValueError, match=key) as error:
        load_preset(method, path)
    assert str(path) in str(error.value)


def test_a_preset_needs_a_description_and_the_model_section_asked_for(tmp_path):
    with pytest.raises(ValueError, match="description"):
        load_preset("cmcrl", write_preset(tmp_path, {"models": {"cmcrl": {}}}))
    path = write_preset(tmp_path, {"description": "contrastive only", "models": {"trrg_contrastive": {}}})
    assert TrrgContrastiveConfig.from_preset(path).to_dict() == TrrgContrastiveConfig().to_dict()
    with pytest.raises(ValueError, match=r"no models.trrg \(TrrgConfig fields\)"):
        TrrgConfig.from_preset(path)


def test_a_preset_file_of_ones_own_loads_by_path(tmp_path):
    path = write_preset(tmp_path, {"description": "wider tiny", "models": {"cmcrl": {"hidden_size": 64}}})
    assert CmcrlConfig.from_preset(path, num_attention_heads=2).hidden_size == 64
    options, _, _ = trrg.model_options(load_stage_config({"preset": str(presets_dir("trrg") / "tiny.yaml")}))
    assert options["num_query_tokens"] == 8


def test_remote_code_has_no_presets_and_says_they_ship_with_the_package(tmp_path):
    # A model folder's configuration file as the Hub holds it: copied alone, without presets/ next to it.
    folder = tmp_path / "remote"
    folder.mkdir()
    copy = Path(shutil.copy(configuration_cmcrl.__file__, folder))
    spec = importlib.util.spec_from_file_location("remote_configuration_cmcrl", copy)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.preset_names() == []
    with pytest.raises(ValueError, match="presets ship with the cxrgen package"):
        module.CmcrlConfig.from_preset("tiny")
    saved = CmcrlConfig.from_preset("tiny").to_dict()
    assert module.CmcrlConfig.from_dict(saved).hidden_size == 32  # a saved config never needs them
    assert module.CmcrlConfig.from_preset(configuration_cmcrl.PRESETS_DIR / "tiny.yaml").hidden_size == 32
