"""A reduced `cxrgen demo` run (tiny model, few studies and steps): every output is written and usable.

The full demo's acceptance (the trained model beats both baselines on macro CE-F1) is measured and recorded in
benchmarks/DEMO.md, not asserted in a timed test.
"""

import json
import os
import sys

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoModel

from cxrgen.cli import main
from cxrgen.demo import BASELINE_NAMES, run_demo
from cxrgen.hub_cards.publish import validate_model_folder
from cxrgen.labels import CHEXPERT_OBSERVATIONS
from cxrgen.modeling.cmcrl import CmcrlForConditionalGeneration

torch.set_num_threads(1)

TINY_MODEL = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "encoder_layers": 1,
    "decoder_layers": 1,
    "backbone_stride": 8,
    "backbone_config": {
        "model_type": "resnet",
        "embedding_size": 8,
        "hidden_sizes": [8, 16],
        "depths": [1, 1],
        "layer_type": "basic",
        "out_features": ["stage2"],
    },
    "local_top_k": 2,
    "global_num_heads": 2,
    "global_head_dim": 8,
    "ldm_intermediate_size": 64,
    "max_report_length": 24,
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    # Without java on PATH METEOR is reported unavailable instead of costing ~15 s per system (test_metrics covers it).
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", os.path.dirname(sys.executable))
        output = tmp_path_factory.mktemp("demo") / "run"
        lines = []
        summary = run_demo(
            output,
            source="synthetic",
            image_size=32,
            max_studies=40,
            max_steps=4,
            batch_size=8,
            num_beams=2,
            model_overrides=TINY_MODEL,
            synthetic_studies=60,
            echo=lines.append,
        )
    return output, summary, "\n".join(lines)


def test_demo_writes_the_metric_table_of_the_three_systems(demo):
    output, summary, printed = demo
    systems = ["CMCRL (trained)", *BASELINE_NAMES]
    assert list(summary["macro_ce_f1"]) == systems
    header = "| Metric | " + " | ".join(systems) + " |"
    results = (output / "results.md").read_text()
    for text in (printed, results):
        assert header in text and "| CE macro F1 |" in text and "| BLEU-4 |" in text
        assert "| Pleural Effusion (" in text
    saved = json.loads((output / "results.json").read_text())
    assert saved["macro_ce_f1"] == summary["macro_ce_f1"] and saved["studies"] == {"train": 28, "val": 4, "test": 8}
    assert saved["settings"]["max_steps"] == 4 and saved["wall_time_seconds"]["total"] > 0
    # The most frequent report is one text for every study; its CE must be that of repeating that text.
    frequent = [json.loads(line) for line in (output / "baselines" / "most_frequent_report.jsonl").open()]
    assert len(frequent) == 8 and len({record["prediction"] for record in frequent}) == 1
    assert "reference:" in printed and "generated:" in printed and "Wall time:" in printed


def test_demo_model_folder_loads_and_matches_its_evaluation(demo):
    output, summary, _ = demo
    folder = output / "model"
    validate_model_folder(folder)  # weights, processor, remote code and card: ready for `cxrgen push`
    model = AutoModel.from_pretrained(folder)
    assert isinstance(model, CmcrlForConditionalGeneration) and model.config.image_size == 32
    records = [json.loads(line) for line in (output / "evaluation" / "predictions.jsonl").open()]
    metrics = json.loads((output / "evaluation" / "metrics.json").read_text())
    assert len(records) == 8 and metrics["settings"]["generation"]["num_beams"] == 2
    assert metrics["ce"]["macro"]["f1"] == summary["macro_ce_f1"]["CMCRL (trained)"]
    assert (output / "evaluation" / "report.md").is_file()


def test_demo_card_flags_phantom_data_and_reports_test_metrics(demo):
    output, summary, _ = demo
    card = ModelCard.load(output / "model" / "README.md")
    assert "synthetic phantom images" in card.text and "Research use only" in card.text
    results = {m["name"]: m["value"] for m in card.data.to_dict()["model-index"][0]["results"][0]["metrics"]}
    assert results["CE macro F1"] == pytest.approx(summary["macro_ce_f1"]["CMCRL (trained)"])
    assert card.data.to_dict()["model-index"][0]["results"][0]["dataset"]["split"] == "test"


def test_demo_per_observation_table_lists_every_observation(demo):
    _, _, printed = demo
    for observation in CHEXPERT_OBSERVATIONS:
        assert f"| {observation} (" in printed


def test_demo_refuses_a_used_output_folder(demo, capsys):
    output, _, _ = demo
    assert main(["demo", "--output", str(output)]) == 2
    assert "is not empty" in capsys.readouterr().err


def test_trrg_demo_trains_both_stages_and_saves_a_loadable_model(tmp_path, monkeypatch, capsys):
    from cxrgen.modeling.trrg import TrrgForConditionalGeneration

    monkeypatch.setenv("PATH", os.path.dirname(sys.executable))
    output = tmp_path / "run"
    code = main(
        [
            "demo",
            "--model",
            "trrg",
            "--output",
            str(output),
            "--source",
            "synthetic",
            "--max-studies",
            "40",
            "--max-steps",
            "3",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "Training a small TRRG: contrastive stage 1 (3 steps), then stage 2 (3 steps)" in printed
    summary = json.loads((output / "results.json").read_text())
    assert list(summary["macro_ce_f1"]) == ["TRRG (trained)", *BASELINE_NAMES]
    stage1 = json.loads((output / "contrastive" / "trainer_state.json").read_text())
    assert stage1["global_step"] == 3
    validate_model_folder(output / "model")
    assert isinstance(AutoModel.from_pretrained(output / "model"), TrrgForConditionalGeneration)
    card = ModelCard.load(output / "model" / "README.md")
    assert "Research use only" in card.text and "disease-aware contrastive pre-training, 3 steps" in card.text
    with pytest.raises(ValueError, match="takes 64 px images, got 32"):
        run_demo(tmp_path / "other", method="trrg", image_size=32)
