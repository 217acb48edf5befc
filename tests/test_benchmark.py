"""The quality benchmark's plumbing on tiny runs (a few studies and steps): every system, table and figure is written,
the summary is what the runs recorded, complete runs are reused, and the reference systems do what they say.

The benchmark's numbers (seeds beating the baselines, ablations) are measured and recorded in benchmarks/QUALITY.md,
not asserted here."""

import json
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score
from test_demo import TINY_MODEL

from cxrgen import benchmark
from cxrgen.benchmark import CLASSIFIER_RETRIEVAL, FIGURE_NAME, ORACLE, TRUE_LABEL_CLUES, run_benchmark
from cxrgen.cli import main
from cxrgen.demo import BASELINE_NAMES
from cxrgen.evaluation.baselines import label_retrieval_reports
from cxrgen.evaluation.perception import f1_thresholds, per_observation_auroc
from cxrgen.labels import CHEXPERT_OBSERVATIONS

torch.set_num_threads(1)
TRUE_LABELS = TRUE_LABEL_CLUES.format("TRRG")

SMALL = {"source": "synthetic", "max_studies": 40, "max_steps": 3, "batch_size": 8, "synthetic_studies": 60}
# The CMCRL benchmark of the module fixture: two seeds, one ablation on the second.
CMCRL_RUN = {
    "method": "cmcrl",
    "seeds": [0, 1],
    "ablations": ["no-vdm-no-ldm"],
    "ablation_seeds": [1],
    "image_size": 32,
    "model_overrides": TINY_MODEL,
    **SMALL,
}


@pytest.fixture(scope="module")
def cmcrl_benchmark(tmp_path_factory):
    # Without java on PATH METEOR is reported unavailable instead of costing seconds per system.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", os.path.dirname(sys.executable))
        output = tmp_path_factory.mktemp("benchmark") / "cmcrl"
        lines = []
        summary = run_benchmark(output, echo=lines.append, **CMCRL_RUN)
    return output, summary, lines


def test_every_system_is_scored_and_the_summary_is_what_the_runs_recorded(cmcrl_benchmark):
    output, summary, _ = cmcrl_benchmark
    systems = ["CMCRL (recipe)", "CMCRL (no-vdm-no-ldm)", CLASSIFIER_RETRIEVAL, *BASELINE_NAMES, ORACLE]
    assert list(summary["systems"]) == systems
    runs = [json.loads((output / "runs" / "recipe" / f"seed-{seed}" / "run.json").read_text()) for seed in (0, 1)]
    macro = [run["metrics"]["ce"]["macro"]["f1"] for run in runs]
    spread = summary["systems"]["CMCRL (recipe)"]["CE macro F1"]
    assert spread["values"] == pytest.approx(macro)
    assert spread["mean"] == pytest.approx(np.mean(macro)) and spread["std"] == pytest.approx(np.std(macro, ddof=1))
    beating = sum(value > max(summary["macro_ce_f1"][name] for name in BASELINE_NAMES) for value in macro)
    assert summary["variants"]["recipe"]["seeds_beating_both_baselines"] == beating
    # each seed's run is a complete demo-like run: model folder, evaluation, perception scored on the test split
    for run in runs:
        assert (output / "runs" / "recipe" / f"seed-{run['plan']['seed']}" / "model" / "config.json").is_file()
        assert set(run["perception_thresholds"]) == set(CHEXPERT_OBSERVATIONS)
    assert runs[0]["plan"]["seed"] == 0 and runs[1]["plan"]["seed"] == 1
    saved = json.loads((output / "results.json").read_text())
    assert saved["macro_ce_f1"] == summary["macro_ce_f1"] and saved["studies"] == {"train": 28, "val": 4, "test": 8}
    environment = saved["environment"]
    assert environment["torch"] == torch.__version__ and environment["torch_threads"] == torch.get_num_threads()
    assert set(environment) == {"date", "python", "torch", "transformers", "torch_threads", "machine"}


def test_the_ablation_trains_only_the_report_generator_on_the_recipes_earlier_stages(cmcrl_benchmark):
    output, summary, _ = cmcrl_benchmark
    assert summary["variants"]["recipe"]["seeds"] == [0, 1] and summary["variants"]["no-vdm-no-ldm"]["seeds"] == [1]
    assert not (output / "runs" / "no-vdm-no-ldm" / "seed-0").exists()
    ablation = output / "runs" / "no-vdm-no-ldm" / "seed-1"
    assert (ablation / "backbone").is_symlink()
    assert (ablation / "backbone").resolve() == (output / "runs" / "recipe" / "seed-1" / "backbone").resolve()
    config = json.loads((ablation / "model" / "config.json").read_text())
    assert config["use_vdm"] is False and config["use_ldm"] is False
    assert json.loads((output / "runs" / "recipe" / "seed-1" / "model" / "config.json").read_text())["use_vdm"]


def test_tables_and_figure_are_written(cmcrl_benchmark):
    output, summary, lines = cmcrl_benchmark
    markdown = (output / "results.md").read_text()
    assert "| CE macro F1 |" in markdown and "| BLEU-4 |" in markdown and " ± " in markdown
    for observation in CHEXPERT_OBSERVATIONS:
        assert f"| {observation} (" in markdown
    assert "seeds beating both baselines" in markdown and "Perception AUROC" in markdown
    assert "Research use only" in markdown and markdown in "\n".join(lines) + "\n"
    with Image.open(output / FIGURE_NAME) as figure:
        assert figure.format == "PNG" and figure.width > 800


def test_complete_runs_are_reused_and_other_settings_refused(cmcrl_benchmark, monkeypatch):
    output, summary, _ = cmcrl_benchmark
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable))
    lines = []
    again = run_benchmark(output, echo=lines.append, **CMCRL_RUN)
    assert not any(line.startswith("Training") for line in lines)
    assert again["systems"] == summary["systems"]
    with pytest.raises(ValueError, match="other settings"):
        run_benchmark(output, method="cmcrl", seeds=[0], ablations=[], image_size=32, echo=lines.append, **SMALL)
    with pytest.raises(ValueError, match="ablation seeds must be some of the seeds"):
        run_benchmark(output, method="cmcrl", seeds=[0], ablation_seeds=[3], echo=lines.append, **SMALL)
    with pytest.raises(ValueError, match="Unknown ablation"):
        run_benchmark(output, method="cmcrl", seeds=[0], ablations=["no-such"], echo=lines.append, **SMALL)


def test_a_run_whose_records_are_out_of_split_order_is_refused(cmcrl_benchmark, monkeypatch):
    output, _, _ = cmcrl_benchmark
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable))
    evaluate = benchmark.evaluate_model

    def shuffled(*args, **kwargs):
        evaluation = evaluate(*args, **kwargs)
        return {**evaluation, "records": evaluation["records"][::-1]}

    monkeypatch.setattr(benchmark, "evaluate_model", shuffled)
    with pytest.raises(RuntimeError, match="not in the order of the annotation's test split"):
        run_benchmark(output, echo=lambda line: None, **{**CMCRL_RUN, "seeds": [0, 1, 2]})


def test_trrg_benchmark_swaps_clues_and_ablates_them(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable))
    summary = run_benchmark(tmp_path / "trrg", method="trrg", seeds=[0], echo=lambda line: None, **SMALL)
    assert list(summary["variants"]) == ["recipe", "no-clues"]
    run = json.loads((tmp_path / "trrg" / "runs" / "recipe" / "seed-0" / "run.json").read_text())
    swapped = run["swapped_clues"]
    assert 0 <= swapped["changed_reports"] <= 1 and swapped["pairs"] >= 0
    # the reports written from the true labels are scored as a system of their own
    assert list(summary["systems"])[:4] == ["TRRG (recipe)", "TRRG (no-clues)", CLASSIFIER_RETRIEVAL, TRUE_LABELS]
    spread = summary["systems"][TRUE_LABELS]["CE macro F1"]
    assert spread["values"] == [run["true_label_clues"]["ce"]["macro"]["f1"]]
    config = json.loads((tmp_path / "trrg" / "runs" / "no-clues" / "seed-0" / "model" / "config.json").read_text())
    assert config["clue_selection"] == "none" and config["freeze_vision_tower"] is True
    assert "swapped clues" in (tmp_path / "trrg" / "results.md").read_text()


def test_label_retrieval_finds_the_closest_combination_and_its_most_written_report():
    train = np.array([[0, 0, 0], [0, 0, 0], [0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 0]], dtype=bool)
    reports = ["normal a", "normal b", "normal a", "one", "two x", "two y"]
    queries = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [1, 1, 1]], dtype=bool)
    # [0, 1, 0] is one away from normal (3 studies) and from [1, 1, 0] (2): the more common one wins
    assert label_retrieval_reports(train, reports, queries) == ["normal a", "one", "two x", "normal a", "two x"]
    with pytest.raises(ValueError, match="query labels of shape"):
        label_retrieval_reports(train, reports, queries[:, :2])


def test_perception_scores_match_scikit_learn_and_thresholds_maximise_f1():
    rng = np.random.default_rng(0)
    truth = rng.random((50, 14)) < 0.3
    truth[:, 13] = False
    probabilities = np.clip(truth * 0.4 + rng.random((50, 14)) * 0.6, 0, 1)
    scored = per_observation_auroc(probabilities, truth, min_positives=5)
    assert "Support Devices" not in scored["observations"]
    for index, name in enumerate(CHEXPERT_OBSERVATIONS[:13]):
        expected = roc_auc_score(truth[:, index], probabilities[:, index])
        assert scored["observations"][name]["auroc"] == pytest.approx(expected)
    thresholds = f1_thresholds(probabilities, truth)
    assert thresholds[13] == 0.5

    def f1(index, threshold):
        predicted = probabilities[:, index] >= threshold
        return 2 * (predicted & truth[:, index]).sum() / (predicted.sum() + truth[:, index].sum())

    for index in range(13):
        assert all(f1(index, thresholds[index]) >= f1(index, t) for t in np.linspace(0, 1, 41))


def test_cli_benchmark_errors_are_one_line(tmp_path, capsys):
    assert main(["benchmark", "--output", str(tmp_path / "b"), "--seeds", "0"]) == 2
    assert "seeds must be distinct integers" in capsys.readouterr().err
    assert main(["benchmark", "--output", str(tmp_path / "b"), "--ablations", "nope", "--source", "synthetic"]) == 2
    assert "Unknown ablation(s) ['nope']" in capsys.readouterr().err
