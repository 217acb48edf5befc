"""Two-process DDP training on CPU (gloo) under torchrun and accelerate launch: both ranks end with the same weights."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import yaml

from cxrgen.data.phantom_benchmark import build_phantom_benchmark

# Two launches of two processes each, ~45 s together on 2 cores.
pytestmark = pytest.mark.slow

TRAIN_SCRIPT = textwrap.dedent(
    """
    import hashlib, json, os, sys
    import torch
    torch.set_num_threads(1)
    from cxrgen.trainers import vlci

    config, data, images, output = sys.argv[1:5]
    trainer, checkpoint, _ = vlci.build_trainer(config, data, images, output)
    trainer.train(resume_from_checkpoint=checkpoint)
    digest = hashlib.sha256()
    for name, tensor in sorted(trainer.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().numpy().tobytes())
    record = {
        "world_size": trainer.args.world_size,
        "rank": trainer.args.process_index,
        "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
        "ddp": type(trainer.model_wrapped).__name__,
        "sha256": digest.hexdigest(),
        "steps": trainer.state.global_step,
        "evaluated": any("eval_bleu_4" in entry for entry in trainer.state.log_history),
    }
    with open(os.path.join(output, f"rank{record['rank']}.json"), "w") as stream:
        json.dump(record, stream)
    """
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    annotation = build_phantom_benchmark(root / "data", source="synthetic", image_size=32, synthetic_studies=20, seed=2)
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump({
        "preset": "tiny",
        "processor": {"min_frequency": 1},
        "training": {
            "per_device_train_batch_size": 2, "per_device_eval_batch_size": 2, "max_steps": 3, "learning_rate": 1e-3,
            "eval_strategy": "steps", "eval_steps": 3, "save_strategy": "steps", "save_steps": 3,
            "generation_num_beams": 1, "use_cpu": True, "report_to": "none", "dataloader_num_workers": 0,
            "disable_tqdm": True,
        },
    }))
    script = root / "train_vlci.py"
    script.write_text(TRAIN_SCRIPT)
    return root, annotation, config, script


def launch(launcher, setup, output):
    root, annotation, config, script = setup
    # No Java on PATH: METEOR (a Java process per evaluation) is reported unavailable instead of taking ~20 s.
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "HF_", "TRANSFORMERS_"))}
    env.update(PATH=str(root), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_HOME=str(root / "hf_home"))
    command = [sys.executable, "-m", *launcher, str(script), str(config), str(annotation), str(annotation.parent / "images"),
               str(output)]
    completed = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-4000:]
    return [json.loads((output / f"rank{rank}.json").read_text()) for rank in (0, 1)]


@pytest.mark.parametrize(
    "launcher",
    [
        ["torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
        # `--cpu` would start one process (accelerate's CPU multi-process launch is MPI); --multi_gpu is its
        # torch.distributed launcher, and the Trainer's use_cpu=True then runs DDP over gloo.
        ["accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "--main_process_port", "0"],
    ],
    ids=["torchrun", "accelerate"],
)
def test_two_processes_end_with_identical_weights(launcher, setup, tmp_path):
    ranks = launch(launcher, setup, tmp_path / "run")
    for rank, record in enumerate(ranks):
        assert (record["rank"], record["world_size"], record["backend"]) == (rank, 2, "gloo")
        assert record["ddp"] == "DistributedDataParallel" and record["steps"] == 3 and record["evaluated"]
    assert ranks[0]["sha256"] == ranks[1]["sha256"]
    # Only the main process writes the checkpoint, and it is a complete model folder with its card.
    checkpoint = tmp_path / "run" / "checkpoint-3"
    assert {"model.safetensors", "processor_config.json", "modeling_cmcrl.py", "README.md"} <= set(os.listdir(checkpoint))
