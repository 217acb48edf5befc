"""Reading and writing prediction files: JSON Lines with one study per line (``id``, ``prediction``, ``reference``).

A line may also say ``"truncated": true`` (the prediction was cut at the generation length limit, as
:func:`cxrgen.evaluation.report.evaluate_model` writes it); other fields are kept as they are.
"""

import json
import os
from pathlib import Path

REQUIRED_FIELDS = ("id", "prediction", "reference")


def read_predictions(path: str | os.PathLike, allow_empty_predictions: bool = False) -> list[dict]:
    """Read a predictions JSONL file into a list of dicts, checking every line has string id/prediction/reference.

    An empty (or whitespace-only) reference is an error: it cannot be scored against. So is an empty prediction,
    which usually means generation failed, unless ``allow_empty_predictions`` (it then scores zero overlap).
    Errors name the file and the line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Predictions file not found: {path}")
    records, seen = [], set()
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {line_number}: not valid JSON ({error.msg}).") from error
            if not isinstance(record, dict):
                raise ValueError(f"{path}, line {line_number}: expected a JSON object, got {type(record).__name__}.")
            for field in REQUIRED_FIELDS:
                if not isinstance(record.get(field), str):
                    raise ValueError(
                        f"{path}, line {line_number}: field '{field}' must be a string, got {record.get(field)!r}."
                    )
            if not record["reference"].strip():
                raise ValueError(
                    f"{path}, line {line_number} (id '{record['id']}'): the reference is empty; every study needs "
                    "the report it is scored against."
                )
            if not record["prediction"].strip() and not allow_empty_predictions:
                raise ValueError(
                    f"{path}, line {line_number} (id '{record['id']}'): the prediction is empty, which usually means "
                    "generation failed; pass --allow-empty-predictions (allow_empty_predictions=True) to score it "
                    "as a report that says nothing."
                )
            if not isinstance(record.get("truncated", False), bool):
                raise ValueError(
                    f"{path}, line {line_number}: field 'truncated' must be true or false, got {record['truncated']!r}."
                )
            if record["id"] in seen:
                raise ValueError(f"{path}, line {line_number}: duplicate id '{record['id']}'.")
            seen.add(record["id"])
            records.append(record)
    if not records:
        raise ValueError(f"{path}: no predictions (the file is empty).")
    return records


def write_predictions(records: list[dict], path: str | os.PathLike) -> Path:
    """Write prediction records (dicts with at least id, prediction, reference) as JSON Lines."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path
