"""Loading a model folder: a config that does not fit the weights, no weights, pickle weights; and how the CLI
reports user errors (one message, exit code 2, no traceback unless --debug) and bugs (a traceback)."""

import json
import logging
import shutil

import pytest
import torch
from PIL import Image

from cxrgen.cli import main
from cxrgen.modeling.cmcrl import CmcrlConfig, CmcrlForConditionalGeneration
from cxrgen.modeling.loading import ModelFolderError, load_model_folder

pytestmark = pytest.mark.transformers_compat


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A saved tiny CMCRL model folder (weights and config only)."""
    folder = tmp_path_factory.mktemp("loading") / "model"
    CmcrlForConditionalGeneration(CmcrlConfig.from_preset("tiny", vocab_size=50)).save_pretrained(folder)
    return folder


def copy_with_config(saved, tmp_path, **changes):
    folder = tmp_path / "model"
    shutil.copytree(saved, folder)
    config = json.loads((folder / "config.json").read_text()) | changes
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_a_matching_folder_loads(saved):
    model = load_model_folder(saved)
    assert isinstance(model, CmcrlForConditionalGeneration) and model.config.vocab_size == 50


def test_a_config_with_another_size_names_the_parameter_both_shapes_and_the_field(saved, tmp_path, caplog):
    folder = copy_with_config(saved, tmp_path, vocab_size=60)
    with pytest.raises(ModelFolderError) as error:
        load_model_folder(folder)
    message = str(error.value)
    assert message.startswith(f"{folder}: config.json does not match the weights in model.safetensors")
    assert "'decoder.embeddings.word_embeddings.weight' has shape (50, 32) in the weights but (60, 32)" in message
    assert "field(s) vocab_size=60" in message and "\n" not in message
    assert "LOAD REPORT" not in caplog.text  # transformers' per-parameter table is not printed as well


def test_a_config_with_more_layers_names_the_missing_parameters(saved, tmp_path):
    folder = copy_with_config(saved, tmp_path, decoder_layers=CmcrlConfig.from_preset("tiny").decoder_layers + 1)
    with pytest.raises(
        ModelFolderError, match=r"parameter\(s\) the model needs are not in the weights \(e.g. 'decoder"
    ):
        load_model_folder(folder)


def test_weights_the_config_does_not_use_are_a_warning(saved, tmp_path, caplog):
    folder = copy_with_config(saved, tmp_path, decoder_layers=CmcrlConfig.from_preset("tiny").decoder_layers - 1)
    with caplog.at_level(logging.WARNING, logger="cxrgen.modeling.loading"):
        load_model_folder(folder)
    assert "parameter(s) in model.safetensors are not used by the model config.json describes" in caplog.text
    assert "(e.g. 'decoder.layers." in caplog.text


def test_a_folder_without_weights_says_what_it_expected(saved, tmp_path):
    folder = copy_with_config(saved, tmp_path)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelFolderError, match=f"^{folder} has no model weights: expected model.safetensors"):
        load_model_folder(folder)


def test_pickle_weights_are_refused_unless_allowed(saved, tmp_path):
    folder = copy_with_config(saved, tmp_path)
    (folder / "model.safetensors").unlink()
    torch.save(CmcrlForConditionalGeneration.from_pretrained(saved).state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(ModelFolderError, match=r"holds only pickle weights \(pytorch_model\.bin\).*allow_pickle=True"):
        load_model_folder(folder)
    model = load_model_folder(folder, allow_pickle=True)
    reference = CmcrlForConditionalGeneration.from_pretrained(saved)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))


def test_cli_user_error_is_one_message_with_exit_code_2_and_debug_shows_the_traceback(saved, tmp_path, capsys):
    folder = copy_with_config(saved, tmp_path, vocab_size=60)
    (folder / "processor_config.json").write_text("{}")
    Image.new("L", (8, 8)).save(tmp_path / "view.png")
    argv = ["generate", "--model", str(folder), str(tmp_path / "view.png")]
    assert main(argv) == 2
    err = capsys.readouterr().err  # transformers' "Loading weights" progress bar comes first
    message = err[err.index("cxrgen generate: error:") :]
    assert message.startswith(f"cxrgen generate: error: {folder}: config.json does not match the weights")
    assert "Traceback" not in err and message.count("\n") == 1
    assert main([*argv, "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ModelFolderError" in err


def test_cli_refuses_pickle_weights_without_allow_pickle(saved, tmp_path, capsys):
    folder = copy_with_config(saved, tmp_path)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")  # the name is what is refused
    (folder / "processor_config.json").write_text("{}")
    assert main(["generate", "--model", str(folder), str(tmp_path / "view.png")]) == 2
    assert "holds only pickle weights" in capsys.readouterr().err


def test_a_bug_is_not_a_user_error(monkeypatch):
    def broken(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr("cxrgen.cli._generate", broken)
    # The handler is bound when the parser is built, so the patched function is the one called.
    with pytest.raises(RuntimeError, match="a bug"):
        main(["generate", "--model", "m", "x.png"])
