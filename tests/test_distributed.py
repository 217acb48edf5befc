"""Two-process DDP training on CPU (gloo) under torchrun and accelerate launch: both ranks end with the same weights."""

import os

import pytest
import yaml
from two_process import TORCHRUN, launch

from cxrgen.data.phantom_benchmark import build_phantom_benchmark

# Two launches of two processes each, ~45 s together on 2 cores.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("distributed")
    annotation = build_phantom_benchmark(
        root / "data", source="synthetic", image_size=32, synthetic_studies=20, seed=2
    )
    config = root / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "preset": "tiny",
                "processor": {"min_frequency": 1},
                "training": {
                    "per_device_train_batch_size": 2,
                    "per_device_eval_batch_size": 2,
                    "max_steps": 3,
                    "learning_rate": 1e-3,
                    "eval_strategy": "steps",
                    "eval_steps": 3,
                    "save_strategy": "steps",
                    "save_steps": 3,
                    "generation_num_beams": 1,
                    "use_cpu": True,
                    "report_to": "none",
                    "dataloader_num_workers": 0,
                    "disable_tqdm": True,
                },
            }
        )
    )
    return root, annotation, config


@pytest.mark.parametrize(
    "launcher",
    [
        TORCHRUN,
        # `--cpu` would start one process (accelerate's CPU multi-process launch is MPI); --multi_gpu is its
        # torch.distributed launcher, and the Trainer's use_cpu=True then runs DDP over gloo.
        [
            "accelerate.commands.launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            "0",
        ],
    ],
    ids=["torchrun", "accelerate"],
)
def test_two_processes_end_with_identical_weights(launcher, setup, tmp_path):
    root, annotation, config = setup
    # No Java on PATH: METEOR (a Java process per evaluation) is reported unavailable instead of taking ~20 s.
    ranks = launch(
        launcher, "vlci", config, annotation, annotation.parent / "images", tmp_path / "run", root, path=root
    )
    for rank, record in enumerate(ranks):
        assert (record["rank"], record["world_size"], record["backend"]) == (rank, 2, "gloo")
        assert record["ddp"] == "DistributedDataParallel" and record["steps"] == 3 and record["evaluated"]
    assert ranks[0]["sha256"] == ranks[1]["sha256"]
    # Only the main process writes the checkpoint, and it is a complete model folder with its card.
    checkpoint = tmp_path / "run" / "checkpoint-3"
    assert {"model.safetensors", "processor_config.json", "modeling_cmcrl.py", "README.md"} <= set(
        os.listdir(checkpoint)
    )
