"""The folders `cxrgen train vlci` and `cxrgen train trrg` save load and generate through
`pipeline("image-to-text", trust_remote_code=True)` in a process that cannot import cxrgen, with the same reports as
the installed package gives."""

import json

import pytest
import torch
import yaml
from transformers import pipeline
from without_cxrgen import run_without_cxrgen

from cxrgen.cli import main
from cxrgen.data.annotation import read_annotation
from cxrgen.data.phantom_benchmark import build_phantom_benchmark
from cxrgen.trainers import trrg_contrastive

pytestmark = pytest.mark.transformers_compat

torch.set_num_threads(1)

QUICK = [
    "--max_steps",
    "2",
    "--per_device_train_batch_size",
    "4",
    "--use_cpu",
    "true",
    "--report_to",
    "none",
    "--disable_tqdm",
    "true",
    "--dataloader_num_workers",
    "0",
    "--save_strategy",
    "no",
    "--eval_strategy",
    "no",
    "--load_best_model_at_end",
    "false",
]
TRRG_MODEL = {"vision_config": {"image_size": 32, "window_size": 2}, "num_query_tokens": 4}

REMOTE_PIPELINE = """
import json, sys
from transformers import pipeline
folder, studies = sys.argv[1], json.loads(sys.argv[2])
pipe = pipeline("image-to-text", model=folder, trust_remote_code=True)
assert type(pipe.model).__module__.startswith("transformers_modules"), type(pipe.model).__module__
print("RESULT" + json.dumps([output["generated_text"] for output in pipe(studies, max_new_tokens=6)]))
"""


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantom")
    annotation = build_phantom_benchmark(root, source="synthetic", image_size=32, synthetic_studies=12, seed=2)
    images = annotation.parent / "images"
    studies = [
        [str(images / path) for path in entry["image_path"]] for entry in read_annotation(annotation)["test"][:2]
    ]
    return annotation, images, studies


def reports_without_cxrgen(folder, studies, workdir):
    completed = run_without_cxrgen(REMOTE_PIPELINE, [str(folder), json.dumps(studies)], workdir)
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert "deprecated" not in completed.stderr, completed.stderr[-4000:]
    return json.loads(completed.stdout.split("RESULT", 1)[1])


def reports_in_process(folder, studies):
    pipe = pipeline("image-to-text", model=str(folder), trust_remote_code=True)
    return [output["generated_text"] for output in pipe(studies, max_new_tokens=6)]


def test_vlci_folder_generates_without_cxrgen(phantom, tmp_path):
    annotation, images, studies = phantom
    config = tmp_path / "vlci.yaml"
    config.write_text(yaml.safe_dump({"preset": "tiny", "processor": {"min_frequency": 1}}))
    output = tmp_path / "vlci"
    assert (
        main(
            [
                "train",
                "vlci",
                "--config",
                str(config),
                "--data",
                str(annotation),
                "--images",
                str(images),
                "--output",
                str(output),
                *QUICK,
            ]
        )
        == 0
    )
    assert reports_without_cxrgen(output, studies, tmp_path) == reports_in_process(output, studies)


def test_trrg_folder_generates_without_cxrgen(phantom, tmp_path):
    annotation, images, studies = phantom
    stage1 = trrg_contrastive.run(
        {"preset": "tiny", "model": {"vision_config": TRRG_MODEL["vision_config"]}},
        annotation,
        images,
        tmp_path / "stage1",
        trainer_args=QUICK,
    )
    config = tmp_path / "trrg.yaml"
    config.write_text(yaml.safe_dump({"preset": "tiny", "model": TRRG_MODEL}))
    output = tmp_path / "trrg"
    assert (
        main(
            [
                "train",
                "trrg",
                "--config",
                str(config),
                "--data",
                str(annotation),
                "--images",
                str(images),
                "--output",
                str(output),
                "--init",
                str(stage1),
                *QUICK,
            ]
        )
        == 0
    )
    assert reports_without_cxrgen(output, studies, tmp_path) == reports_in_process(output, studies)
