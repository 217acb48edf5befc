"""How much of its clues a trained TRRG writes: one `cxrgen demo --model trrg` (or benchmark seed) run folder.

    python benchmarks/bench_trrg_clue_following.py RUN [--num-beams 1] [--output clue_following.json]

RUN holds `contrastive/` (stage 1), `model/` (stage 2) and `data/` (annotation.json, images/), as `cxrgen demo
--model trrg --output RUN` leaves it. On the test split the stage-1 zero-shot head gives each study's probabilities;
the model then writes every test report twice: with its own clues (those probabilities, as `generate` computes them)
and with the study's true labels as clues (probability 1 for the positive observations, 0 elsewhere). For each it
reports, per observation with at least 5 positive clues: how often a positive clue is written (the labeler finds the
observation positive in the report), the F1 of the clue labels themselves (positive = probability >= the model's
clue threshold) and of the report's labels, against the reference labels; and the share of a study's positive clues
that its report writes, by the number of positive clues the study has. Prints a Markdown summary to stderr and one
JSON object to stdout (or `--output`).
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from cxrgen.environment import run_environment
from cxrgen.evaluation.metrics import compute_ce_metrics
from cxrgen.evaluation.perception import positive_matrix, study_probabilities
from cxrgen.inference import generate_reports, load_generator
from cxrgen.labeler import label_reports
from cxrgen.labels import CHEXPERT_OBSERVATIONS


def following(clues: np.ndarray, written: np.ndarray, truth: np.ndarray) -> dict:
    """Per-observation and per-clue-count figures of reports `written` from boolean `clues` (studies, 14); the F1s
    are `compute_ce_metrics`' (booleans as mention codes: positive or not mentioned)."""
    clue_scores = compute_ce_metrics(clues.astype(int), truth.astype(int))
    report_scores = compute_ce_metrics(written.astype(int), truth.astype(int))
    observations = {}
    for index, name in enumerate(CHEXPERT_OBSERVATIONS):
        positive = clues[:, index]
        if positive.sum() >= 5:
            observations[name] = {
                "positive_clues": int(positive.sum()),
                "written_when_clue_positive": float(written[positive, index].mean()),
                "written_when_clue_negative": float(written[~positive, index].mean()),
                "clue_f1": clue_scores["per_observation"][name]["f1"],
                "report_f1": report_scores["per_observation"][name]["f1"],
            }
    counts = clues.sum(1)
    by_count = {
        int(count): {
            "studies": int((counts == count).sum()),
            "share_written": float((written & clues)[counts == count].sum() / clues[counts == count].sum()),
        }
        for count in np.unique(counts)
        if count > 0
    }
    return {
        "report_macro_f1": report_scores["macro"]["f1"],
        "observations": observations,
        "by_positive_clues": by_count,
    }


def measure(run: Path, num_beams: int) -> dict:
    annotation = json.loads((run / "data" / "annotation.json").read_text())
    studies = [[run / "data" / "images" / path for path in entry["image_path"]] for entry in annotation["test"]]
    truth = positive_matrix([entry["labels"] for entry in annotation["test"]])
    generator = load_generator(run / "model")
    thresholds = np.asarray(generator.model.config.thresholds())
    probabilities = study_probabilities(run / "contrastive", studies)
    result = {**run_environment(), "run": run.name, "num_beams": num_beams, "test_studies": len(studies)}
    for name, clue_probabilities in (("own_clues", probabilities), ("true_labels_as_clues", truth.astype(np.float32))):
        reports = generate_reports(
            generator,
            studies,
            batch_size=64,
            num_beams=num_beams,
            study_inputs={"clue_probabilities": torch.from_numpy(clue_probabilities)},
        )
        written = positive_matrix(label_reports([report["report"] for report in reports]))
        result[name] = following(clue_probabilities >= thresholds, written, truth)
    return result


def markdown(result: dict) -> str:
    own, true = result["own_clues"], result["true_labels_as_clues"]
    lines = [
        f"Report macro CE-F1: own clues {own['report_macro_f1']:.3f}, true labels as clues "
        f"{true['report_macro_f1']:.3f} (beams {result['num_beams']}).",
        "",
        "| observation | own clues: positive | written when positive | clue F1 | report F1 | true-label clues: "
        "positive | written when positive | report F1 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in CHEXPERT_OBSERVATIONS:
        a, b = own["observations"].get(name), true["observations"].get(name)
        if a is None and b is None:
            continue
        left = (
            "| | | |"
            if a is None
            else (
                f"{a['positive_clues']} | {a['written_when_clue_positive']:.2f} | {a['clue_f1']:.2f} | {a['report_f1']:.2f} |"
            )
        )
        right = (
            "| |"
            if b is None
            else (f"{b['positive_clues']} | {b['written_when_clue_positive']:.2f} | {b['report_f1']:.2f} |")
        )
        lines.append(f"| {name} | {left} {right}")
    lines += [
        "",
        "| positive clues in the study | own: studies | own: share written | true: studies | true: share written |",
    ]
    lines.append("|---:|---:|---:|---:|---:|")
    for count in sorted({*own["by_positive_clues"], *true["by_positive_clues"]}):
        a, b = own["by_positive_clues"].get(count), true["by_positive_clues"].get(count)
        cells = [f"{x['studies']} | {x['share_written']:.2f}" if x else " | " for x in (a, b)]
        lines.append(f"| {count} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a `cxrgen demo --model trrg --output RUN` folder")
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--output", type=Path, help="write the JSON here instead of standard output")
    args = parser.parse_args()
    for part in ("contrastive", "model", "data/annotation.json"):
        if not (args.run / part).exists():
            parser.error(f"{args.run}: no {part} there (expected the folder of a `cxrgen demo --model trrg` run)")
    result = measure(args.run, args.num_beams)
    print(markdown(result), file=sys.stderr)
    text = json.dumps(result, indent=2)
    if args.output:
        args.output.write_text(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
