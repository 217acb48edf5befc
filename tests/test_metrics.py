import shutil

import evaluate
import numpy as np
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from sklearn.metrics import precision_recall_fscore_support

from cxrgen.evaluation import metrics
from cxrgen.evaluation.metrics import (
    NLG_METRICS,
    RRG_METRIC_PATH,
    compute_ce_metrics,
    compute_nlg_metrics,
    evaluate_reports,
    format_metrics_table,
)
from cxrgen.labeler import label_report
from cxrgen.labels import CHEXPERT_OBSERVATIONS, NUM_OBSERVATIONS, binarize

PREDICTIONS = [
    "the heart is normal in size . the lungs are clear . no pleural effusion or pneumothorax .",
    "mild cardiomegaly . no focal airspace disease . no pleural effusion .",
    "",
    "the lungs are clear . no acute cardiopulmonary abnormality .",
]
REFERENCES = [
    "the heart size is normal . the lungs are clear . there is no pleural effusion or pneumothorax .",
    "the heart is enlarged . streaky opacities may represent atelectasis . small left pleural effusion .",
    "no acute cardiopulmonary abnormality .",
    "heart size normal . lungs are clear . no pneumothorax .",
]


@pytest.fixture
def no_java(monkeypatch):
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None if name == "java" else real_which(name))


def _direct_scores(predictions, references, meteor=None):
    gts = {index: [text] for index, text in enumerate(references)}
    res = {index: [text] for index, text in enumerate(predictions)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    scores = {f"BLEU-{n}": bleu[n - 1] for n in range(1, 5)}
    scores["ROUGE-L"] = Rouge().compute_score(gts, res)[0]
    scores["CIDEr"] = Cider().compute_score(gts, res)[0]
    if meteor is not None:
        scores["METEOR"] = meteor.compute_score(gts, res)[0]
    return scores


@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs a Java runtime")
def test_nlg_metrics_equal_direct_pycocoevalcap_calls_and_meteor_process_is_closed(monkeypatch):
    # One Java start-up for both sides: the direct call scores first, then compute_nlg_metrics gets the same
    # scorer object, which also lets the test see that the jar process is shut down afterwards.
    meteor = Meteor()
    expected = _direct_scores(PREDICTIONS, REFERENCES, meteor)
    monkeypatch.setattr(metrics, "Meteor", lambda: meteor)
    result = compute_nlg_metrics(PREDICTIONS, REFERENCES)
    assert meteor.meteor_p.poll() is not None
    assert result["unavailable"] == {}
    assert set(result) == set(NLG_METRICS) | {"unavailable"}
    for name in NLG_METRICS:
        assert isinstance(result[name], float)
        assert result[name] == expected[name], name
    assert 0 < result["METEOR"] < 1


@pytest.mark.skipif(shutil.which("java") is None, reason="METEOR needs a Java runtime")
def test_one_meteor_scorer_for_several_systems_gives_each_system_its_own_score():
    systems = [PREDICTIONS, REFERENCES[::-1], ["no acute cardiopulmonary abnormality ."] * len(REFERENCES)]
    separate = [compute_nlg_metrics(system, REFERENCES)["METEOR"] for system in systems]
    with metrics.MeteorScorer() as meteor:
        shared = [evaluate_reports(system, REFERENCES, meteor=meteor)["nlg"]["METEOR"] for system in systems]
        process = meteor._meteor.meteor_p
    assert shared == separate and len(set(shared)) == 3
    assert process.poll() is not None
    assert meteor.score({0: ["a ."]}, {0: ["a ."]}) == (None, "the METEOR scorer was closed")


def test_meteor_unavailable_without_java_and_the_rest_is_computed(no_java):
    result = compute_nlg_metrics(PREDICTIONS, REFERENCES)
    assert result["METEOR"] is None
    assert "Java" in result["unavailable"]["METEOR"]
    expected = _direct_scores(PREDICTIONS, REFERENCES)
    for name in ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr"):
        assert result[name] == expected[name], name
    assert "n/a" in format_metrics_table({"nlg": result, "ce": compute_ce_metrics([[0] * 14], [[0] * 14])})


def test_meteor_failure_is_reported_not_raised(monkeypatch):
    def broken_meteor():
        raise FileNotFoundError("java")

    monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: "java")
    monkeypatch.setattr(metrics, "Meteor", broken_meteor)
    result = compute_nlg_metrics(PREDICTIONS, REFERENCES)
    assert result["METEOR"] is None
    assert "METEOR failed" in result["unavailable"]["METEOR"]
    assert result["BLEU-4"] > 0


def test_references_are_never_truncated(no_java):
    reference = " ".join(["the heart is normal in size . the lungs are clear ."] * 8)
    truncated = " ".join(reference.split()[:20])
    prediction = ["the heart is normal in size . the lungs are clear ."]
    full = compute_nlg_metrics(prediction, [reference])
    short = compute_nlg_metrics(prediction, [truncated])
    assert full["BLEU-1"] != short["BLEU-1"]
    assert full["ROUGE-L"] == _direct_scores(prediction, [reference])["ROUGE-L"]
    assert full["ROUGE-L"] != short["ROUGE-L"]


@pytest.mark.parametrize(
    "predictions,references,message",
    [
        (["a ."], ["a .", "b ."], "differ in length"),
        ([], [], "must not be empty"),
        ("a .", "a .", "list of strings"),
        (["a .", None], ["a .", "b ."], r"predictions\[1\]"),
    ],
)
def test_bad_text_input_raises(predictions, references, message):
    with pytest.raises(ValueError, match=message):
        compute_nlg_metrics(predictions, references)
    with pytest.raises(ValueError, match=message):
        evaluate_reports(predictions, references)


def _random_labels(rng, num_reports):
    return rng.integers(0, 4, size=(num_reports, NUM_OBSERVATIONS)).tolist()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ce_metrics_equal_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    pred, ref = _random_labels(rng, 25), _random_labels(rng, 25)
    pred[0] = [0] * NUM_OBSERVATIONS  # a report without any positive, where zero_division matters
    result = compute_ce_metrics(pred, ref)
    y_pred = np.array([binarize(row) for row in pred])
    y_true = np.array([binarize(row) for row in ref])
    for ours, average in (("micro", "micro"), ("macro", "macro"), ("example", "samples")):
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average=average, zero_division=0)
        assert result[ours] == pytest.approx({"precision": p, "recall": r, "f1": f}), ours
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
    for index, name in enumerate(CHEXPERT_OBSERVATIONS):
        row = result["per_observation"][name]
        assert row == pytest.approx({"precision": p[index], "recall": r[index], "f1": f[index], "support": s[index]})
    assert result["num_reports"] == 25


def test_ce_uncertain_and_negative_count_as_absent():
    positive_only = [[1] * NUM_OBSERVATIONS]
    result = compute_ce_metrics(positive_only, [[3] * 7 + [2] * 7])
    assert result["micro"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert compute_ce_metrics(positive_only, positive_only)["micro"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}


@pytest.mark.parametrize(
    "pred,ref,message",
    [
        ([[0] * 14], [[0] * 14, [0] * 14], "differ in length"),
        ([[0] * 13], [[0] * 13], "14-code"),
        ([[0] * 14, [0] * 13], [[0] * 14, [0] * 14], "14 codes"),
        ([[5] * 14], [[0] * 14], "codes must be"),
        ([], [], "14-code"),
    ],
)
def test_bad_labels_raise(pred, ref, message):
    with pytest.raises(ValueError, match=message):
        compute_ce_metrics(pred, ref)


def test_evaluate_reports_labels_both_sides(no_java):
    result = evaluate_reports(PREDICTIONS, REFERENCES)
    assert result["nlg"] == compute_nlg_metrics(PREDICTIONS, REFERENCES)
    expected_ce = compute_ce_metrics(
        [label_report(text) for text in PREDICTIONS], [label_report(text) for text in REFERENCES]
    )
    assert result["ce"] == expected_ce
    # Reference 2 has cardiomegaly and an effusion; prediction 2 finds the cardiomegaly only.
    assert result["ce"]["per_observation"]["Cardiomegaly"] == {
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
        "support": 1,
    }
    assert result["ce"]["per_observation"]["Pleural Effusion"]["recall"] == 0.0
    table = format_metrics_table(result)
    for heading in ("BLEU-4", "ROUGE-L", "CIDEr", "micro", "macro", "example", "Pleural Effusion"):
        assert heading in table


def test_evaluate_reports_accepts_another_labeler(no_java):
    always_cardiomegaly = lambda text: [0, 0, 1] + [0] * 11  # noqa: E731
    result = evaluate_reports(["a ."], ["b ."], labeler=always_cardiomegaly)
    assert result["ce"]["micro"]["f1"] == 1.0


def test_evaluate_metric_module_loads_offline_and_matches(no_java, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    metric = evaluate.load(str(RRG_METRIC_PATH))
    result = metric.compute(predictions=PREDICTIONS, references=REFERENCES)
    assert result == evaluate_reports(PREDICTIONS, REFERENCES)
    assert result["nlg"]["unavailable"]["METEOR"]
