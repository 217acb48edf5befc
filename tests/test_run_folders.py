"""The run folder of a training stage: which checkpoint --resume picks, and what a fresh run refuses or replaces."""

import json
import logging

import pytest

from cxrgen.trainers.arguments import checkpoint_problem, previous_run_outputs, remove_previous_run, resume_checkpoint


def write_checkpoint(output, step, weights=True, state="{}", card=True):
    folder = output / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    if weights:
        (folder / "model.safetensors").write_bytes(b"weights")
    if state is not None:
        (folder / "trainer_state.json").write_text(state)
    if card:
        (folder / "README.md").write_text("card")
    return folder


def test_resume_skips_incomplete_newer_checkpoints_naming_each(tmp_path, caplog):
    write_checkpoint(tmp_path, 10)
    write_checkpoint(tmp_path, 20, card=False)  # killed before the card, which is written last
    write_checkpoint(tmp_path, 22, state='{"global_st')  # killed while the Trainer wrote its state
    write_checkpoint(tmp_path, 24, weights=False, state=None, card=False)  # killed while writing the weights
    with caplog.at_level(logging.WARNING, logger="cxrgen.trainers.arguments"):
        assert resume_checkpoint(tmp_path, resume=True) == str(tmp_path / "checkpoint-10")
    warnings = caplog.text
    assert "checkpoint-24 (no weights" in warnings
    assert "checkpoint-22 (trainer_state.json does not parse" in warnings
    assert "checkpoint-20 (no model card" in warnings
    assert warnings.count("resuming from checkpoint-10") == 3


def test_resume_without_a_complete_checkpoint_is_an_error_listing_each(tmp_path):
    write_checkpoint(tmp_path, 2, state=None)
    write_checkpoint(tmp_path, 4, weights=False)
    with pytest.raises(
        ValueError,
        match=r"no complete checkpoint-<step>.*\n- checkpoint-4: no weights.*\n- checkpoint-2: no trainer_state.json",
    ):
        resume_checkpoint(tmp_path, resume=True)
    with pytest.raises(ValueError, match="has no checkpoint-<step> folder"):
        resume_checkpoint(tmp_path / "empty", resume=True)


def test_a_lora_checkpoint_is_complete_without_a_card(tmp_path):
    folder = tmp_path / "checkpoint-3"
    folder.mkdir()
    (folder / "adapter_model.safetensors").write_bytes(b"adapter")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 3}))
    assert checkpoint_problem(folder) is None


def test_a_fresh_run_refuses_a_folder_holding_a_model_naming_its_files(tmp_path):
    (tmp_path / "README.md").write_text("my notes")
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(ValueError, match=r"already holds a model \(README.md, model.safetensors\).*--overwrite"):
        resume_checkpoint(tmp_path, resume=False)
    write_checkpoint(tmp_path, 2)
    with pytest.raises(ValueError, match=r"already holds checkpoints \(checkpoint-2\).*--resume.*--overwrite"):
        resume_checkpoint(tmp_path, resume=False)
    with pytest.raises(ValueError, match="pass one"):
        resume_checkpoint(tmp_path, resume=True, overwrite=True)
    assert resume_checkpoint(tmp_path, resume=False, overwrite=True) is None
    assert (tmp_path / "checkpoint-2").is_dir()  # removed only once the run is built
    assert resume_checkpoint(tmp_path / "new", resume=False) is None


def test_overwrite_removes_the_earlier_runs_outputs_only(tmp_path, caplog):
    write_checkpoint(tmp_path, 2)
    (tmp_path / "evaluation-test").mkdir()
    (tmp_path / "evaluation-test" / "metrics.json").write_text("{}")
    for name in ("config.json", "model.safetensors", "README.md", "trainer_state.json", "modeling_cmcrl.py"):
        (tmp_path / name).write_text("x")
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "data").mkdir()
    assert [path.name for path in previous_run_outputs(tmp_path)][:2] == ["checkpoint-2", "evaluation-test"]
    with caplog.at_level(logging.WARNING, logger="cxrgen.trainers.arguments"):
        remove_previous_run(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data", "notes.txt"]
    assert "removing" in caplog.text and "evaluation-test" in caplog.text
