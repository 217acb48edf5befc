"""Reading and writing prediction files: JSON Lines with one study per line (``id``, ``prediction``, ``reference``)."""

import json
from pathlib import Path

REQUIRED_FIELDS = ("id", "prediction", "reference")


def read_predictions(path):
    """Read a predictions JSONL file into a list of dicts, checking every line has string id/prediction/reference."""
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
            if record["id"] in seen:
                raise ValueError(f"{path}, line {line_number}: duplicate id '{record['id']}'.")
            seen.add(record["id"])
            records.append(record)
    if not records:
        raise ValueError(f"{path}: no predictions (the file is empty).")
    return records


def write_predictions(records, path):
    """Write prediction records (dicts with at least id, prediction, reference) as JSON Lines."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path
