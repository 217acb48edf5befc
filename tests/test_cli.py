"""The `cxrgen generate`, `evaluate --model` and `push` commands on tiny saved model folders and phantom data."""

import json
import os
import sys

import pytest
import torch
from safetensors.torch import load_file
from test_trrg_common import IMAGE_SIZE as TRRG_IMAGE_SIZE
from test_trrg_common import build_tokenizer as build_trrg_tokenizer
from test_trrg_common import trrg_config
from tiny_folders import save_phantom_card
from transformers import AutoModel, pipeline

from cxrgen.cli import main
from cxrgen.data.annotation import read_annotation
from cxrgen.data.phantom_benchmark import build_phantom_benchmark
from cxrgen.evaluation.predictions import read_predictions
from cxrgen.labels import CHEXPERT_OBSERVATIONS
from cxrgen.modeling.cmcrl import CmcrlConfig, CmcrlForConditionalGeneration, CmcrlForPreTraining
from cxrgen.modeling.trrg import TrrgForConditionalGeneration
from cxrgen.processing.cleaning import clean_report
from cxrgen.processing.image_processing_cxr import CxrImageProcessor
from cxrgen.processing.processing_cmcrl import CmcrlProcessor
from cxrgen.processing.processing_trrg import TrrgProcessor
from cxrgen.processing.tokenization import build_report_tokenizer

torch.set_num_threads(1)

IMAGE_SIZE = 32


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    """A 15-study synthetic phantom benchmark at 32 px: (annotation path, image root)."""
    root = tmp_path_factory.mktemp("phantom")
    path = build_phantom_benchmark(root, source="synthetic", image_size=IMAGE_SIZE, synthetic_studies=15, seed=3)
    return path, root / "images"


@pytest.fixture(scope="module")
def cmcrl_folder(phantom, tmp_path_factory):
    """A saved (untrained) tiny CMCRL folder with its processor and a phantom-data card."""
    annotation = read_annotation(phantom[0])
    reports = [clean_report(entry["report"]) for entry in annotation["train"]]
    tokenizer = build_report_tokenizer(reports, min_frequency=1, model_max_length=16)
    processor = CmcrlProcessor(CxrImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}), tokenizer)
    torch.manual_seed(0)
    model = CmcrlForConditionalGeneration(CmcrlConfig.from_preset("tiny", vocab_size=len(tokenizer))).eval()
    folder = tmp_path_factory.mktemp("cmcrl") / "model"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    save_phantom_card(folder, "cmcrl", "tiny CMCRL", repo_id="cxrgen-test/cmcrl-cli")
    return folder


def run(argv, capsys):
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def study(phantom, split="test", index=0):
    annotation = read_annotation(phantom[0])
    return [str(phantom[1] / path) for path in annotation[split][index]["image_path"]]


def test_generate_prints_the_pipeline_report(cmcrl_folder, phantom, capsys):
    images = study(phantom)
    code, out, _ = run(["generate", "--model", cmcrl_folder, *images, "--num-beams", "2", "--json"], capsys)
    assert code == 0
    result = json.loads(out)
    expected = pipeline("image-to-text", model=str(cmcrl_folder), trust_remote_code=True)([images], num_beams=2)
    assert set(result) == {"report"} and result["report"] == expected[0]["generated_text"]

    code, out, _ = run(["generate", "--model", cmcrl_folder, *images, "--num-beams", "2"], capsys)
    assert code == 0 and out.strip() == result["report"]
    code, out, _ = run(["generate", "--model", cmcrl_folder, *images, "--max-new-tokens", "2", "--json"], capsys)
    assert len(json.loads(out)["report"].split()) <= 2  # [BOS] is not counted, two new tokens at most


def test_generate_trrg_gives_probabilities_and_clues(tmp_path, phantom, capsys):
    torch.manual_seed(0)
    config = trrg_config("llama", clue_selection="topk", clue_top_k=3)
    folder = tmp_path / "trrg"
    TrrgForConditionalGeneration(config).eval().save_pretrained(folder)
    image_processor = CxrImageProcessor(size={"height": TRRG_IMAGE_SIZE, "width": TRRG_IMAGE_SIZE})
    TrrgProcessor.for_model(config, image_processor, build_trrg_tokenizer()).save_pretrained(folder)

    code, out, _ = run(["generate", "--model", folder, *study(phantom), "--max-new-tokens", "4", "--json"], capsys)
    assert code == 0
    result = json.loads(out)
    assert set(result) == {"report", "probabilities", "clues"}
    assert list(result["probabilities"]) == list(CHEXPERT_OBSERVATIONS)
    # The printed findings are the model's own zero-shot perception of this study, not just numbers in [0, 1].
    inputs = TrrgProcessor.from_pretrained(folder)(images=[study(phantom)], return_tensors="pt")
    with torch.no_grad():
        expected = (
            TrrgForConditionalGeneration.from_pretrained(folder)
            .eval()
            .structured_findings(inputs["pixel_values"], inputs.get("pixel_mask"))[0]
        )
    assert result["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-6)
    assert [(c["observation"], c["polarity"]) for c in result["clues"]] == [
        (c["observation"], c["polarity"]) for c in expected["clues"]
    ]
    assert len(result["clues"]) == 3  # top-k clue selection injects exactly k clues
    assert all(clue["probability"] == result["probabilities"][clue["observation"]] for clue in result["clues"])

    code, out, _ = run(["generate", "--model", folder, *study(phantom), "--max-new-tokens", "4"], capsys)
    assert code == 0 and "Observation probabilities" in out and "Clues used:" in out


def test_generate_refuses_what_cannot_write_reports(tmp_path, cmcrl_folder, phantom, capsys):
    CmcrlForPreTraining(CmcrlConfig.from_preset("tiny")).save_pretrained(tmp_path / "radcare")
    code, _, err = run(["generate", "--model", tmp_path / "radcare", *study(phantom)], capsys)
    assert code == 2 and "CmcrlForPreTraining" in err and "cannot generate reports" in err
    code, _, err = run(["generate", "--model", tmp_path / "missing", *study(phantom)], capsys)
    assert code == 2 and "config.json not found" in err
    code, _, err = run(["generate", "--model", cmcrl_folder, tmp_path / "nothere.png"], capsys)
    assert code == 2 and "nothere.png" in err


def test_evaluate_model_writes_predictions_metrics_and_report(cmcrl_folder, phantom, tmp_path, capsys, monkeypatch):
    # Without java on PATH METEOR is reported unavailable instead of taking ~15 s per run (test_metrics covers it).
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable))
    output = tmp_path / "evaluation"
    argv = ["evaluate", "--model", cmcrl_folder, "--data", phantom[0], "--images", phantom[1], "--split", "test"]
    code, out, _ = run([*argv, "--output", output, "--batch-size", "1", "--num-beams", "1"], capsys)
    assert code == 0 and "Clinical efficacy" in out

    test_entries = read_annotation(phantom[0])["test"]
    records = read_predictions(output / "predictions.jsonl")
    assert [r["id"] for r in records] == [entry["id"] for entry in test_entries]
    assert [r["reference"] for r in records] == [clean_report(entry["report"]) for entry in test_entries]
    assert all(len(r["images"]) == 2 for r in records)
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["ce"]["num_reports"] == len(test_entries)
    assert metrics["settings"]["generation"]["num_beams"] == 1 and metrics["settings"]["split"] == "test"

    # The same predictions scored by `evaluate --predictions` give the same numbers.
    code, _, _ = run(
        ["evaluate", "--predictions", output / "predictions.jsonl", "--output", tmp_path / "m.json"], capsys
    )
    rescored = json.loads((tmp_path / "m.json").read_text())
    assert code == 0 and rescored["ce"] == metrics["ce"] and rescored["nlg"]["BLEU-4"] == metrics["nlg"]["BLEU-4"]

    report = (output / "report.md").read_text()
    assert "| CE macro F1 |" in report and "| Pleural Effusion |" in report
    assert metrics["nlg"]["METEOR"] is None and "METEOR unavailable: METEOR needs a Java runtime" in report
    assert (
        f"**Reference:** {records[0]['reference']}" in report
        and f"**Generated:** {records[0]['prediction']}" in report
    )
    thumbnails = sorted(p.name for p in (output / "examples").iterdir())
    assert len(thumbnails) == 2 * min(3, len(records)) and f"(examples/{thumbnails[0]})" in report


def test_evaluate_model_reports_predictions_cut_at_the_length_limit(
    cmcrl_folder, phantom, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable))
    argv = ["evaluate", "--model", cmcrl_folder, "--data", phantom[0], "--images", phantom[1], "--num-beams", "1"]
    code, out, _ = run([*argv, "--output", tmp_path / "cut", "--max-new-tokens", "2"], capsys)
    records = read_predictions(tmp_path / "cut" / "predictions.jsonl", allow_empty_predictions=True)
    # Two new tokens are too few for any report of the untrained model to end with its [EOS].
    assert code == 0 and all(record["truncated"] for record in records)
    metrics = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert metrics["predictions"] == {"num_truncated": len(records), "truncated_ids": [r["id"] for r in records]}
    assert f"{len(records)} of {len(records)} predictions reached the generation length limit" in out
    assert "reached the generation length limit" in (tmp_path / "cut" / "report.md").read_text()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model", "{model}"], "--model needs --data"),
        (["--predictions", "p.jsonl", "--num-beams", "2"], "--num-beams is only used with --model"),
        (["--model", "{model}", "--data", "{data}", "--images", "{images}", "--split", "val"], "no 'val' split"),
    ],
)
def test_evaluate_argument_errors(extra, message, cmcrl_folder, phantom, tmp_path, capsys):
    annotation = read_annotation(phantom[0])
    del annotation["val"]
    (tmp_path / "no_val.json").write_text(json.dumps(annotation))
    values = {"model": cmcrl_folder, "data": tmp_path / "no_val.json", "images": phantom[1]}
    code, _, err = run(["evaluate", *[arg.format(**values) for arg in extra]], capsys)
    assert code == 2 and message in err


def test_push_then_load_back_with_automodel_and_pipeline(cmcrl_folder, phantom, fake_hub, capsys):
    repo_id = "cxrgen-test/cmcrl-cli"
    code, out, _ = run(["push", "--model", cmcrl_folder, "--repo", repo_id, "--private"], capsys)
    assert code == 0 and repo_id in out
    assert fake_hub.repos[repo_id].private
    uploaded = fake_hub.files(repo_id)
    assert {
        "README.md",
        "config.json",
        "model.safetensors",
        "modeling_cmcrl.py",
        "pipeline_cmcrl.py",
        "processor_config.json",
        "tokenizer.json",
    } <= set(uploaded)
    assert "phantom" in uploaded["README.md"].decode()

    model = AutoModel.from_pretrained(repo_id, trust_remote_code=True)
    assert isinstance(model, CmcrlForConditionalGeneration)
    saved = load_file(cmcrl_folder / "model.safetensors")
    assert all(torch.equal(model.state_dict()[name], tensor) for name, tensor in saved.items())

    images = study(phantom)
    from_hub = pipeline("image-to-text", model=repo_id, trust_remote_code=True)
    assert from_hub.task == "image-to-text" and type(from_hub).__module__.startswith("transformers_modules.")
    code, out, _ = run(["generate", "--model", cmcrl_folder, *images, "--json"], capsys)
    assert from_hub([images])[0]["generated_text"] == json.loads(out)["report"]
    assert fake_hub.unhandled == []


def test_push_without_card_says_how_to_make_one(cmcrl_folder, tmp_path, fake_hub, capsys):
    folder = tmp_path / "no_card"
    folder.mkdir()
    for path in cmcrl_folder.iterdir():
        if path.is_file() and path.name != "README.md":
            (folder / path.name).write_bytes(path.read_bytes())
    code, _, err = run(["push", "--model", folder, "--repo", "cxrgen-test/no-card"], capsys)
    assert code == 2 and "no model card (README.md)" in err and "build_model_card" in err
    assert fake_hub.repos == {}
