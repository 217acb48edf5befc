"""The CMCRL training stages (RadCARE, VLCI) on tiny configs and a tiny phantom benchmark, through `cxrgen train`."""

import json
import logging
import os
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForPreTraining, AutoProcessor, TrainerCallback

from cxrgen.cli import main
from cxrgen.data.annotation import annotation_to_dataset_dict, read_annotation
from cxrgen.data.collators import TaskSchedule, split_views
from cxrgen.data.phantom_benchmark import build_phantom_benchmark
from cxrgen.modeling.cmcrl import PRETRAINING_TASKS, CmcrlForConditionalGeneration, CmcrlForPreTraining
from cxrgen.processing.processing_cmcrl import CmcrlProcessor
from cxrgen.trainers import backbone, radcare, vlci
from cxrgen.trainers.arguments import build_training_args, checkpoint_problem
from cxrgen.trainers.stage_config import get_stage, load_stage_config
from cxrgen.trainers.training_data import is_phantom_annotation

torch.set_num_threads(1)

IMAGE_SIZE = 32
TINY_TRAINING = {
    "per_device_train_batch_size": 4,
    "per_device_eval_batch_size": 4,
    "max_steps": 4,
    "save_strategy": "steps",
    "save_steps": 2,
    "logging_steps": 1,
    "use_cpu": True,
    "report_to": "none",
    "dataloader_num_workers": 0,
    "disable_tqdm": True,
}
VLCI_EVAL = {"eval_strategy": "steps", "eval_steps": 2, "generation_num_beams": 2, "learning_rate": "3e-3"}


@pytest.fixture(autouse=True)
def no_java(monkeypatch, tmp_path_factory):
    """METEOR starts a Java process per evaluation (~20 s here); without `java` on PATH it is reported unavailable."""
    monkeypatch.setenv("PATH", str(tmp_path_factory.mktemp("empty-path")))


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """A 16-study synthetic phantom benchmark at 32 px: (annotation path, image root)."""
    root = tmp_path_factory.mktemp("phantom")
    path = build_phantom_benchmark(root, source="synthetic", image_size=IMAGE_SIZE, synthetic_studies=16, seed=5)
    return path, root / "images"


def write_config(folder, training=None, **sections):
    path = folder / "config.yaml"
    config = {
        "preset": "tiny",
        "processor": {"min_frequency": 1},
        "training": {**TINY_TRAINING, **(training or {})},
        **sections,
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def radcare_run(phantom, tmp_path_factory):
    """`cxrgen train radcare` on a YAML config, with Trainer arguments passed through: the output folder."""
    folder = tmp_path_factory.mktemp("radcare")
    config = write_config(folder)
    output = folder / "run"
    code = main(
        [
            "train",
            "radcare",
            "--config",
            str(config),
            "--data",
            str(phantom[0]),
            "--images",
            str(phantom[1]),
            "--output",
            str(output),
            "--seed",
            "7",
            "--learning_rate",
            "2e-3",
        ]
    )
    assert code == 0
    return output


def assert_complete_model_folder(folder, phantom_card=True):
    files = set(os.listdir(folder))
    assert {
        "model.safetensors",
        "config.json",
        "configuration_cmcrl.py",
        "modeling_cmcrl.py",
        "pipeline_cmcrl.py",
        "processor_config.json",
        "processing_cmcrl.py",
        "image_processing_cxr.py",
        "cleaning.py",
        "tokenizer.json",
        "README.md",
    } <= files
    assert not any(name.endswith(".bin") and name != "training_args.bin" for name in files)
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_cmcrl.CmcrlForConditionalGeneration"
    assert "image-to-text" in config["custom_pipelines"]
    card = (folder / "README.md").read_text()
    assert ("synthetic phantom images" in card) == phantom_card
    assert "Research use only" in card
    return card


def test_radcare_cli_trains_logs_each_task_and_saves_complete_folders(radcare_run):
    state = json.loads((radcare_run / "trainer_state.json").read_text())
    checkpoint_state = json.loads((radcare_run / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and checkpoint_state["global_step"] == 4
    schedule = TaskSchedule(PRETRAINING_TASKS, [1 / 3, 1 / 3, 1 / 6, 1 / 6], seed=7)
    steps = [entry for entry in state["log_history"] if "loss" in entry]
    assert [entry["step"] for entry in steps] == [1, 2, 3, 4]
    for entry in steps:
        # One micro-batch per logged step: its task's loss is the step's loss, the other tasks are absent.
        task = schedule.task(entry["step"] - 1)
        logged = {key[5:] for key in entry if key.startswith("loss_")}
        assert logged == {task}
        assert entry[f"loss_{task}"] == pytest.approx(entry["loss"], abs=1e-3)
        assert entry["learning_rate"] <= 2e-3
    assert len({schedule.task(entry["step"] - 1) for entry in steps}) > 1  # the mix really varies

    for folder in (radcare_run / "checkpoint-2", radcare_run / "checkpoint-4", radcare_run):
        card = assert_complete_model_folder(folder)
        assert "RadCARE pre-training" in card and "has not been evaluated" in card
        assert isinstance(AutoModelForPreTraining.from_pretrained(folder), CmcrlForPreTraining)
        assert isinstance(AutoProcessor.from_pretrained(folder), CmcrlProcessor)
    final, last = (
        load_file(radcare_run / "model.safetensors"),
        load_file(radcare_run / "checkpoint-4" / "model.safetensors"),
    )
    assert final.keys() == last.keys() and all(torch.equal(final[k], last[k]) for k in final)


def test_vlci_init_from_radcare_selects_best_checkpoint_by_metric(radcare_run, phantom, tmp_path, caplog):
    config = write_config(tmp_path, {**VLCI_EVAL, "metric_for_best_model": "ce_macro_f1"})
    output = tmp_path / "vlci"
    with caplog.at_level(logging.INFO, logger="cxrgen.trainers.vlci"):
        assert vlci.run(config, phantom[0], phantom[1], output, init=radcare_run) == output
    assert "VLCI --init" in caplog.text and "copied" in caplog.text

    state = json.loads((output / "trainer_state.json").read_text())
    evaluations = [entry for entry in state["log_history"] if "eval_ce_macro_f1" in entry]
    assert [entry["step"] for entry in evaluations] == [2, 4]
    assert "eval_meteor" not in evaluations[0] and {"eval_bleu_4", "eval_cider", "eval_ce_micro_f1"} <= set(
        evaluations[0]
    )
    best = max(evaluations, key=lambda entry: entry["eval_ce_macro_f1"])  # the first of equal scores wins
    assert state["best_model_checkpoint"].endswith(f"checkpoint-{best['step']}")
    final = load_file(output / "model.safetensors")
    chosen = load_file(output / f"checkpoint-{best['step']}" / "model.safetensors")
    assert all(torch.equal(final[k], chosen[k]) for k in final)

    card = assert_complete_model_folder(output)
    assert "RadCARE checkpoint" in card and "CE macro F1" in card and "copied" in card
    checkpoint_card = assert_complete_model_folder(output / "checkpoint-2")
    assert f"{evaluations[0]['eval_ce_macro_f1']:.4f}" in checkpoint_card
    model = AutoModel.from_pretrained(output / "checkpoint-2")
    assert isinstance(model, CmcrlForConditionalGeneration)
    processor = AutoProcessor.from_pretrained(output / "checkpoint-2")
    # The vocabulary is RadCARE's, and the transferred embeddings start from RadCARE's weights.
    assert processor.tokenizer.get_vocab() == AutoProcessor.from_pretrained(radcare_run).tokenizer.get_vocab()
    pretrained = AutoModelForPreTraining.from_pretrained(radcare_run)
    assert model.config.vocab_size == pretrained.config.vocab_size


class Interrupt(Exception):
    pass


class InterruptAfterSave(TrainerCallback):
    """Kills the run right after checkpoint `step` is written, as a crash or a cancelled job would."""

    def __init__(self, step):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Interrupt


def weights(folder):
    return load_file(folder / "model.safetensors")


VLCI_NO_EVAL = {"eval_strategy": "no", "load_best_model_at_end": False, "learning_rate": 1e-3}


@pytest.mark.parametrize(
    "stage, training, sections",
    [
        (radcare, {"gradient_accumulation_steps": 2, "per_device_train_batch_size": 2}, {}),
        (vlci, VLCI_NO_EVAL, {}),
        # Balanced draws over more than one epoch: the sampler must replay each epoch's draw on resume.
        (vlci, {**VLCI_NO_EVAL, "max_steps": 8, "save_steps": 4}, {"data": {"balance_power": 1.0}}),
        (backbone, {"eval_strategy": "no", "load_best_model_at_end": False}, {}),
    ],
    ids=["radcare", "vlci", "vlci-balanced", "backbone"],
)
def test_resume_after_interruption_gives_the_same_weights(stage, training, sections, phantom, tmp_path):
    config = write_config(tmp_path, training, **sections)
    straight = stage.run(config, phantom[0], phantom[1], tmp_path / "straight")

    trainer, checkpoint, _ = stage.build_trainer(config, phantom[0], phantom[1], tmp_path / "interrupted")
    # The ModelFolderCallback (which writes the card) runs first, so the checkpoint is complete when it stops.
    stop = training.get("save_steps", 2)
    trainer.add_callback(InterruptAfterSave(stop))
    with pytest.raises(Interrupt):
        trainer.train(resume_from_checkpoint=checkpoint)
    assert not (tmp_path / "interrupted" / f"checkpoint-{2 * stop}").exists()
    with pytest.raises(ValueError, match="--resume"):
        stage.run(config, phantom[0], phantom[1], tmp_path / "interrupted")
    resumed = stage.run(config, phantom[0], phantom[1], tmp_path / "interrupted", resume=True)

    expected, actual = weights(straight), weights(resumed)
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[name], actual[name]) for name in expected)
    before = weights(tmp_path / "interrupted" / f"checkpoint-{stop}")
    assert not all(torch.equal(before[name], actual[name]) for name in expected)  # the resumed steps did train


def test_training_args_precedence_and_errors(tmp_path):
    args = build_training_args(
        tmp_path,
        {"learning_rate": 5e-4, "weight_decay": 0.01, "lr_scheduler_kwargs": {"min_lr_rate": 0.001}},
        {"learning_rate": "1e-4", "max_steps": 3, "use_cpu": True},
        ["--max_steps", "5", "--report_to", "tensorboard"],
    )
    assert (args.learning_rate, args.weight_decay, args.max_steps, args.report_to) == (1e-4, 0.01, 5, ["tensorboard"])
    assert args.lr_scheduler_kwargs == {"min_lr_rate": 0.001} and args.use_cpu and args.output_dir == str(tmp_path)
    with pytest.raises(ValueError, match="unknown key.*learning_rat"):
        build_training_args(tmp_path, {}, {"learning_rat": 1.0}, source="x.yaml")
    with pytest.raises(ValueError, match="unknown Trainer argument"):
        build_training_args(tmp_path, {}, {}, ["--no_such_argument", "1"])
    with pytest.raises(ValueError, match="learning_rate"):
        build_training_args(tmp_path, {}, {}, ["--learning_rate", "fast"])
    with pytest.raises(ValueError, match="output_dir"):
        build_training_args(tmp_path, {}, {}, ["--output_dir", str(tmp_path / "elsewhere")])


def test_stage_config_and_cli_errors(phantom, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"preset": "tiny", "optimizer": {"lr": 1}}))
    with pytest.raises(ValueError, match="bad.yaml.*unknown top-level key.*optimizer"):
        load_stage_config(bad)
    assert load_stage_config("tiny").preset == "tiny"
    code = main(
        [
            "train",
            "vlci",
            "--config",
            str(bad),
            "--data",
            str(phantom[0]),
            "--images",
            str(phantom[1]),
            "--output",
            str(tmp_path / "out"),
        ]
    )
    assert code == 2 and "unknown top-level key" in capsys.readouterr().err
    config = write_config(tmp_path, {"metric_for_best_model": "bleu4", **VLCI_EVAL})
    with pytest.raises(ValueError, match="metric_for_best_model='bleu4'"):
        vlci.build_trainer(config, phantom[0], phantom[1], tmp_path / "out")
    with pytest.raises(ValueError, match="--init is not used"):
        radcare.build_trainer(config, phantom[0], phantom[1], tmp_path / "out", init=tmp_path)
    with pytest.raises(ValueError, match="has no checkpoint"):
        radcare.build_trainer(config, phantom[0], phantom[1], tmp_path / "out", resume=True)
    assert get_stage("radcare") is radcare.run and get_stage("vlci") is vlci.run
    with pytest.raises(ValueError, match="Unknown training stage"):
        get_stage("r2gen")


def test_split_views_and_task_schedule(phantom):
    annotation = read_annotation(phantom[0])
    train = annotation_to_dataset_dict({"train": annotation["train"][:3]}, phantom[1])["train"]
    samples = split_views(train)
    assert samples["id"][:2] == [f"{train['id'][0]}#0", f"{train['id'][0]}#1"] and len(samples) == 6
    assert samples[1]["report"] == train[0]["report"] and samples[1]["images"][0].size == (IMAGE_SIZE, IMAGE_SIZE)
    assert is_phantom_annotation(annotation)
    moved = {"train": [{**entry, "image_path": ["frontal.png"]} for entry in annotation["train"]]}
    assert not is_phantom_annotation(moved)

    schedule = TaskSchedule(PRETRAINING_TASKS, [1, 1, 0, 2], seed=3)
    draws = [schedule.task(step, micro) for step in range(400) for micro in range(2)]
    assert draws == [
        TaskSchedule(PRETRAINING_TASKS, [1, 1, 0, 2], seed=3).task(s, m) for s in range(400) for m in range(2)
    ]
    assert "v2v" not in draws and draws.count("t2t") / len(draws) == pytest.approx(0.5, abs=0.06)
    with pytest.raises(ValueError, match="non-negative"):
        TaskSchedule(PRETRAINING_TASKS, [1, -1, 0, 0], seed=0)


def test_backbone_warm_up_then_vlci_keeps_the_frozen_backbone(phantom, tmp_path):
    """`cxrgen train backbone` trains the CMCRL backbone as an observation classifier; VLCI started from it with
    freeze_backbone and balanced sampling ends with exactly those backbone tensors (BatchNorm statistics included)."""
    from transformers import AutoModelForImageClassification

    from cxrgen.labels import CHEXPERT_OBSERVATIONS

    backbone_dir = tmp_path / "backbone"
    config = write_config(tmp_path, {"eval_strategy": "steps", "eval_steps": 2}, data={"augment": False})
    code = main(
        [
            "train",
            "backbone",
            "--config",
            str(config),
            "--data",
            str(phantom[0]),
            "--images",
            str(phantom[1]),
            "--output",
            str(backbone_dir),
        ]
    )
    assert code == 0
    classifier = AutoModelForImageClassification.from_pretrained(backbone_dir)
    assert classifier.config.problem_type == "multi_label_classification"
    assert list(classifier.config.id2label.values()) == list(CHEXPERT_OBSERVATIONS)
    assert not (backbone_dir / "training_args.bin").exists() and (backbone_dir / "preprocessor_config.json").is_file()
    card = (backbone_dir / "README.md").read_text()
    assert "Not for clinical decisions" in card and "macro_f1" in card and "phantom" in card
    checkpoint = backbone_dir / "checkpoint-2"
    assert AutoModelForImageClassification.from_pretrained(checkpoint).config.num_labels == len(CHEXPERT_OBSERVATIONS)
    assert "Not for clinical decisions" in (checkpoint / "README.md").read_text()

    (tmp_path / "vlci").mkdir()
    vlci_config = write_config(
        tmp_path / "vlci",
        {"eval_strategy": "no", "load_best_model_at_end": False, "learning_rate": 1e-2},
        model={"freeze_backbone": True},
        data={"balance_power": 1.0},
    )
    output = vlci.run(vlci_config, phantom[0], phantom[1], tmp_path / "vlci" / "run", init=backbone_dir)
    trained = weights(output)
    loaded = {name.removeprefix("resnet."): tensor for name, tensor in weights(backbone_dir).items()}
    prefix = "encoder.embeddings.backbone."
    backbone_names = [name for name in trained if name.startswith(prefix)]
    assert backbone_names and any("running_mean" in name for name in backbone_names)
    assert all(torch.equal(trained[name], loaded[name[len(prefix) :]]) for name in backbone_names)
    model = AutoModel.from_pretrained(output)
    assert model.config.freeze_backbone and not any(
        p.requires_grad for p in model.encoder.embeddings.backbone.parameters()
    )
    assert "vision backbone (frozen) from backbone" in (output / "README.md").read_text()
    with pytest.raises(ValueError, match="--init .*config.json not found"):
        vlci.build_trainer(vlci_config, phantom[0], phantom[1], tmp_path / "other", init=tmp_path)


def test_balanced_sampling_option_is_checked(phantom, tmp_path):
    config = write_config(tmp_path, VLCI_NO_EVAL, data={"balance_power": -1})
    with pytest.raises(ValueError, match="data.balance_power must be a number >= 0"):
        vlci.build_trainer(config, phantom[0], phantom[1], tmp_path / "out")
    config = write_config(tmp_path, VLCI_NO_EVAL, data={"balance_power": 1})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['balance_power'\] in 'data'"):
        radcare.build_trainer(config, phantom[0], phantom[1], tmp_path / "out")


def test_backbone_metrics_equal_scikit_learn():
    from sklearn.metrics import f1_score
    from transformers import EvalPrediction

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 14, generator=generator)
    labels = (torch.rand(50, 14, generator=generator) > 0.7).float()
    scores = backbone.observation_f1(EvalPrediction(predictions=logits.numpy(), label_ids=labels.numpy()))
    predicted = (logits > 0).numpy()
    assert scores["macro_f1"] == pytest.approx(f1_score(labels.numpy(), predicted, average="macro", zero_division=0))
    assert scores["micro_f1"] == pytest.approx(f1_score(labels.numpy(), predicted, average="micro", zero_division=0))


KILL_WHILE_SAVING = """
import os, sys
from cxrgen.trainers import radcare

config, data, images, output, step = sys.argv[1:]
trainer, checkpoint, _ = radcare.build_trainer(config, data, images, output)
save_rng_state = trainer._save_rng_state


def killed(output_dir):  # the process dies after the weights and optimizer, before the RNG and trainer state
    if trainer.state.global_step == int(step):
        os._exit(9)
    save_rng_state(output_dir)


trainer._save_rng_state = killed
trainer.train()
"""


def test_resume_after_a_kill_while_writing_a_checkpoint_falls_back_to_the_last_complete_one(phantom, tmp_path, caplog):
    training = {"gradient_accumulation_steps": 2, "per_device_train_batch_size": 2, "max_steps": 6, "save_steps": 2}
    config = write_config(tmp_path, training)
    killed = tmp_path / "killed"
    argv = [sys.executable, "-c", KILL_WHILE_SAVING, str(config), str(phantom[0]), str(phantom[1]), str(killed), "6"]
    assert subprocess.run(argv, capture_output=True).returncode == 9
    assert (killed / "checkpoint-6" / "model.safetensors").is_file()
    # A kill before the card of checkpoint-4 (written last) was complete.
    (killed / "checkpoint-4" / "README.md").unlink()
    with caplog.at_level(logging.WARNING, logger="cxrgen.trainers.arguments"):
        resumed = radcare.run(config, phantom[0], phantom[1], killed, resume=True)
    assert "skipping the incomplete checkpoint-6 (no trainer_state.json)" in caplog.text
    assert "skipping the incomplete checkpoint-4 (no model card" in caplog.text
    assert "resuming from checkpoint-2" in caplog.text
    # Bit-identity of a resumed run is tested above, in one process; across processes the losses differ in the last
    # float digit, so this checks the resumed run went on from step 2 to the end.
    state = json.loads((resumed / "trainer_state.json").read_text())
    assert state["global_step"] == 6 and [entry["step"] for entry in state["log_history"] if "loss" in entry][-1] == 6
    assert all(checkpoint_problem(killed / f"checkpoint-{step}") is None for step in (2, 4, 6))
    before = weights(killed / "checkpoint-2")
    assert not all(torch.equal(before[name], tensor) for name, tensor in weights(resumed).items())


def test_train_refuses_a_finished_run_unless_overwrite_and_checks_images_and_views_first(phantom, tmp_path, capsys):
    annotation = read_annotation(phantom[0])
    config = write_config(tmp_path, {"max_steps": 1, "save_steps": 1})
    output = tmp_path / "out"
    argv = ["train", "radcare", "--config", str(config), "--images", str(phantom[1]), "--output", str(output)]
    assert main([*argv, "--data", str(phantom[0])]) == 0
    (output / "evaluation-test").mkdir()
    (output / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main([*argv, "--data", str(phantom[0])]) == 2
    assert "already holds checkpoints" in capsys.readouterr().err

    # Bad inputs are refused before anything is removed, each in one message naming the study.
    broken = tmp_path / "broken"
    broken.mkdir()
    first = annotation["train"][0]
    (broken / "empty.png").write_bytes(b"")
    # An absolute image path stays as it is under --images.
    bad_images = {
        **annotation,
        "train": [{**first, "image_path": [str(broken / "empty.png")]}, *annotation["train"][1:]],
    }
    (tmp_path / "bad_images.json").write_text(json.dumps(bad_images))
    assert main([*argv, "--data", str(tmp_path / "bad_images.json"), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "empty.png" in err and first["id"] in err and "train" in err
    three_views = {**annotation, "train": [{**first, "image_path": first["image_path"] * 2}, *annotation["train"][1:]]}
    (tmp_path / "three_views.json").write_text(json.dumps(three_views))
    assert main([*argv, "--data", str(tmp_path / "three_views.json"), "--overwrite", "--skip-image-check"]) == 2
    err = capsys.readouterr().err
    assert f"study '{first['id']}' has {2 * len(first['image_path'])} views" in err
    assert (output / "evaluation-test").is_dir() and (output / "checkpoint-1").is_dir()

    assert main([*argv, "--data", str(phantom[0]), "--overwrite"]) == 0
    assert not (output / "evaluation-test").exists() and (output / "notes.txt").read_text() == "mine"
    assert (output / "checkpoint-1" / "README.md").is_file()


def test_init_folder_with_only_pickle_weights_is_refused_unless_allowed(phantom, tmp_path, capsys, caplog):
    init = tmp_path / "pickled"
    init.mkdir()
    (init / "config.json").write_text("{}")
    torch.save({}, init / "pytorch_model.bin")
    config = write_config(tmp_path, VLCI_NO_EVAL)
    argv = ["train", "vlci", "--config", str(config), "--data", str(phantom[0]), "--images", str(phantom[1])]
    assert main([*argv, "--output", str(tmp_path / "out"), "--init", str(init)]) == 2
    err = capsys.readouterr().err
    assert "pickled holds only pickle weights (pytorch_model.bin)" in err and "--allow-pickle" in err
    assert not (tmp_path / "out").exists()
    # Allowed, the pickle is read: its (empty) state dict is not the backbone the config describes.
    with caplog.at_level(logging.WARNING, logger="cxrgen.data.validation"):
        code = main(
            [*argv, "--output", str(tmp_path / "out"), "--init", str(init), "--allow-pickle", "--skip-image-check"]
        )
    assert code == 2 and f"{init}: backbone tensor" in capsys.readouterr().err
    assert caplog.text.count("Image check skipped") == 1
