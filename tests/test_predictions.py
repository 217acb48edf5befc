"""`cxrgen evaluate --predictions`: empty texts are refused by line, long references are scored whole, predictions
cut at the generation limit are counted."""

import json
import os
import sys

import pytest

from cxrgen.cli import main
from cxrgen.evaluation.predictions import read_predictions


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


@pytest.fixture
def no_java(monkeypatch):
    # METEOR would start a Java process per run; test_metrics covers it.
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable))


GOOD = {"id": "s1", "prediction": "the lungs are clear .", "reference": "the lungs are clear ."}


@pytest.mark.parametrize("field", ["reference", "prediction"])
def test_an_empty_text_is_refused_naming_the_file_and_line(tmp_path, field):
    path = write_jsonl(tmp_path / "p.jsonl", [GOOD, {**GOOD, "id": "s2", field: "  "}])
    with pytest.raises(ValueError, match=f"^{path}, line 2 \\(id 's2'\\): the {field} is empty"):
        read_predictions(path)


def test_empty_predictions_can_be_allowed_but_empty_references_cannot(tmp_path, no_java, capsys):
    path = write_jsonl(tmp_path / "p.jsonl", [GOOD, {**GOOD, "id": "s2", "prediction": ""}])
    assert main(["evaluate", "--predictions", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}, line 2 (id 's2'): the prediction is empty" in err and "--allow-empty-predictions" in err
    assert "Traceback" not in err
    assert main(["evaluate", "--predictions", str(path), "--allow-empty-predictions"]) == 0
    assert len(read_predictions(path, allow_empty_predictions=True)) == 2

    path = write_jsonl(tmp_path / "r.jsonl", [{**GOOD, "reference": ""}])
    assert main(["evaluate", "--predictions", str(path), "--allow-empty-predictions"]) == 2
    assert f"{path}, line 1 (id 's1'): the reference is empty" in capsys.readouterr().err


def test_a_20000_word_reference_is_scored_whole(tmp_path, no_java, capsys):
    # The only finding is stated after 20,000 words: a truncated reference would lose it.
    reference = "the heart is normal . " * 4000 + "there is a large pleural effusion ."
    prediction = "there is a large pleural effusion ."
    assert len(reference.split()) > 20000
    path = write_jsonl(tmp_path / "p.jsonl", [{"id": "long", "prediction": prediction, "reference": reference}])
    assert main(["evaluate", "--predictions", str(path), "--output", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["ce"]["per_observation"]["Pleural Effusion"] == {
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
        "support": 1,
    }
    # BLEU's brevity penalty over the whole reference: a 7-word prediction of a 20,007-word report scores ~0.
    assert metrics["nlg"]["BLEU-1"] < 1e-6


def test_truncated_predictions_are_counted(tmp_path, no_java, capsys):
    records = [GOOD, {**GOOD, "id": "s2", "truncated": True}, {**GOOD, "id": "s3", "truncated": False}]
    path = write_jsonl(tmp_path / "p.jsonl", records)
    assert main(["evaluate", "--predictions", str(path), "--output", str(tmp_path / "m.json")]) == 0
    assert "1 of 3 predictions were cut at the generation length limit" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["predictions"] == {"num_truncated": 1, "truncated_ids": ["s2"]}

    write_jsonl(path, [{**GOOD, "truncated": "yes"}])
    with pytest.raises(ValueError, match="line 1: field 'truncated' must be true or false"):
        read_predictions(path)
