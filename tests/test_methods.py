"""The method registry: every entry resolves to real classes and trainers, and the CLI, trainers, card builder and
demo take their method and stage names from it."""

import importlib
import subprocess
import sys

import pytest
from transformers import PreTrainedModel, ProcessorMixin

from cxrgen.cli import build_parser
from cxrgen.methods import (
    DEFAULT_METHOD,
    METHODS,
    CardText,
    Method,
    Stage,
    find_stage,
    get_method,
    register_method,
    resolve,
    stage_names,
)
from cxrgen.presets import load_preset
from cxrgen.trainers.stage_config import STAGES, get_stage


def subparser(name):
    commands = next(action for action in build_parser()._actions if action.dest == "command")
    return commands.choices[name]


@pytest.mark.parametrize("name", list(METHODS))
def test_every_entry_names_real_classes_and_trainers(name):
    method = get_method(name)
    config, model, pretraining = resolve(method.config), resolve(method.model), resolve(method.pretraining_model)
    assert model.config_class is config and issubclass(pretraining, PreTrainedModel)
    assert issubclass(resolve(method.processor), ProcessorMixin)
    assert callable(getattr(model, "structured_findings", None)) == method.structured_findings
    assert method.card.title and method.card.summary and method.card.citation.startswith("@")
    for stage in method.stages:
        assert find_stage(stage.name) == (method, stage)
        assert get_stage(stage.name) is importlib.import_module(stage.module).run is resolve(stage.trainer)
        assert stage.name == importlib.import_module(stage.module).stage.name
    demo = load_preset(name, method.demo_preset)["demo"]
    assert {entry["stage"] for entry in demo["stages"]} <= {stage.name for stage in method.stages}


def test_the_cli_and_trainers_take_their_names_from_the_registry():
    assert list(STAGES) == stage_names() == ["backbone", "radcare", "vlci", "trrg-contrastive", "trrg"]
    train = next(action for action in subparser("train")._actions if action.dest == "stage")
    assert list(train.choices) == stage_names()
    demo = next(action for action in subparser("demo")._actions if action.dest == "model")
    assert list(demo.choices) == list(METHODS) and demo.default == DEFAULT_METHOD in METHODS


def test_unknown_names_and_clashing_entries_are_refused():
    with pytest.raises(ValueError, match=r"Unknown method 'r2gen': expected one of \['cmcrl', 'trrg'\]"):
        get_method("r2gen")
    with pytest.raises(ValueError, match="Unknown training stage 'r2gen'"):
        find_stage("r2gen")
    entry = get_method("cmcrl")
    with pytest.raises(ValueError, match="already registered"):
        register_method(entry)
    clash = Method(**{**entry.__dict__, "name": "other", "stages": (Stage("vlci", "x:run", "again"),)})
    with pytest.raises(ValueError, match=r"\['vlci'\] are taken"):
        register_method(clash)
    assert list(METHODS) == ["cmcrl", "trrg"] and isinstance(entry.card, CardText)


def test_the_registry_and_presets_import_without_torch_or_transformers():
    # The CLI imports the registry for its choices before it knows the command.
    code = "import sys, cxrgen.methods, cxrgen.presets; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
