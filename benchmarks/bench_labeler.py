"""The rule-based labeler against an independent reading of 100 real IU-Xray reports.

``labeler_reading_iu100.json`` holds 100 IU-Xray findings sections (a seeded sample) labelled by hand, with the
reading protocol; this script labels the same texts with ``cxrgen.labeler`` and prints, per observation, the
four-way agreement and the precision / recall of the labeler's positives against the reading's positives (the
positives are what the CE metrics score). It also counts the positives of every observation over all IU-Xray
studies when the NLM report archive is installed.

    python benchmarks/bench_labeler.py                               # the labeler of this checkout
    python benchmarks/bench_labeler.py --option granuloma_as_lesion  # with a labeler option switched on
    python benchmarks/bench_labeler.py --labeler-file OTHER/cxrgen/labeler.py  # e.g. an older commit's labeler
"""

import argparse
import importlib.util
import json
import platform
import sys
import time
from pathlib import Path

from cxrgen.labels import CHEXPERT_OBSERVATIONS, MENTION_NAMES, NOT_MENTIONED, POSITIVE

READING = Path(__file__).with_name("labeler_reading_iu100.json")
_CODES = {name: code for code, name in MENTION_NAMES.items()}


def load_reading(path=READING):
    """The reading's studies as (id, report, 14 codes) tuples; observations it leaves out are NOT_MENTIONED."""
    studies = json.loads(Path(path).read_text())["studies"]
    return [
        (
            s["id"],
            s["report"],
            [_CODES[s["labels"][o]] if o in s["labels"] else NOT_MENTIONED for o in CHEXPERT_OBSERVATIONS],
        )
        for s in studies
    ]


def load_labeler(labeler_file=None):
    """``label_report`` of ``cxrgen.labeler`` or of a labeler.py file given by path (e.g. from a git worktree)."""
    if labeler_file is None:
        from cxrgen.labeler import label_report

        return label_report
    spec = importlib.util.spec_from_file_location("labeler_under_test", labeler_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.label_report


def compare(predicted, reading):
    """Per observation: four-way agreement and positive precision / recall / counts, labeler vs reading."""
    rows = {}
    for index, observation in enumerate(CHEXPERT_OBSERVATIONS):
        pairs = [(p[index], r[index]) for p, r in zip(predicted, reading)]
        true_positive = sum(p == POSITIVE and r == POSITIVE for p, r in pairs)
        predicted_positive = sum(p == POSITIVE for p, _ in pairs)
        read_positive = sum(r == POSITIVE for _, r in pairs)
        rows[observation] = {
            "agreement": sum(p == r for p, r in pairs) / len(pairs),
            "labeler_positives": predicted_positive,
            "reading_positives": read_positive,
            "precision": true_positive / predicted_positive if predicted_positive else None,
            "recall": true_positive / read_positive if read_positive else None,
        }
    return rows


def iu_positive_counts(label_report):
    """Positives per observation over every study of ``convert_iu_xray()``, or None without the archive."""
    from cxrgen.data.iu_xray import convert_iu_xray, find_nlm_reports_archive

    if find_nlm_reports_archive() is None:
        return None
    entries = [entry for split in convert_iu_xray().values() for entry in split]
    labels = [label_report(entry["report"]) for entry in entries]
    return len(entries), {o: sum(row[i] == POSITIVE for row in labels) for i, o in enumerate(CHEXPERT_OBSERVATIONS)}


def _fraction(value):
    return "-" if value is None else f"{value:.2f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labeler-file", help="a labeler.py to load instead of cxrgen.labeler")
    parser.add_argument("--option", action="append", default=[], help="a labeler keyword option to set to True")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of markdown")
    args = parser.parse_args(argv)

    base = load_labeler(args.labeler_file)
    options = dict.fromkeys(args.option, True)

    def label_report(text):
        return base(text, **options)

    reading = load_reading()
    started = time.perf_counter()
    predicted = [label_report(report) for _, report, _ in reading]
    rows = compare(predicted, [codes for _, _, codes in reading])
    counts = iu_positive_counts(label_report)
    elapsed = time.perf_counter() - started
    if args.json:
        print(json.dumps({"per_observation": rows, "iu_positives": counts}, indent=1))
        return
    print(f"labeler: {args.labeler_file or 'cxrgen.labeler'}; options: {sorted(options) or 'none'}")
    print(f"python {platform.python_version()}, {platform.machine()} {platform.system()}; {elapsed:.1f} s\n")
    iu_header = "" if counts is None else f" IU positives (of {counts[0]}) |"
    print(f"| observation | agreement | labeler pos | reading pos | pos precision | pos recall |{iu_header}")
    print("|---|---|---|---|---|---|" + ("---|" if counts else ""))
    for observation, row in rows.items():
        cells = [
            observation,
            f"{row['agreement']:.2f}",
            str(row["labeler_positives"]),
            str(row["reading_positives"]),
            _fraction(row["precision"]),
            _fraction(row["recall"]),
        ]
        if counts is not None:
            cells.append(str(counts[1][observation]))
        print("| " + " | ".join(cells) + " |")
    mean = sum(row["agreement"] for row in rows.values()) / len(rows)
    print(f"\nmean four-way agreement over the 14 observations: {mean:.3f}")


if __name__ == "__main__":
    sys.exit(main())
