"""Zero-shot disease perception of a TRRG stage-1 folder: per-observation AUROC on an annotation split.

Reads a `cxrgen train trrg-contrastive` output folder (model and processor; the prompts are embedded with its
tokenizer, as stage 2 embeds them) and an annotation (`cxrgen.evaluation.perception`); the ground truth of each
study is its `labels` field when present (phantom data), else the project labeler's reading of its report; positive = code 1, as the clinical-efficacy metrics count it. AUROC is
reported for observations with at least `--min-positives` positive studies (and at least one negative).

    python benchmarks/bench_trrg_zero_shot.py RUN/contrastive --data DATA/annotation.json --images DATA/images
"""

import argparse
import json
import time
from pathlib import Path

from cxrgen.environment import run_environment
from cxrgen.evaluation.perception import per_observation_auroc, positive_matrix, study_probabilities
from cxrgen.labeler import label_report


def zero_shot_auroc(folder: Path, annotation: dict, images: Path, split: str, min_positives: int) -> dict:
    """Per-observation AUROC of the folder's zero-shot probabilities on `split`, and their macro mean."""
    entries = annotation[split]
    probabilities = study_probabilities(folder, [[images / path for path in entry["image_path"]] for entry in entries])
    truth = positive_matrix([entry.get("labels") or label_report(entry["report"]) for entry in entries])
    scored = per_observation_auroc(probabilities, truth, min_positives)
    observations = {
        name: {"auroc": round(value["auroc"], 4), "positives": value["positives"]}
        for name, value in scored["observations"].items()
    }
    return {"macro_auroc": round(scored["macro_auroc"], 4), "observations": observations, "studies": len(entries)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a trrg-contrastive model folder")
    parser.add_argument("--data", type=Path, required=True, help="the annotation.json")
    parser.add_argument("--images", type=Path, required=True, help="the image root of its paths")
    parser.add_argument("--split", default="test")
    parser.add_argument("--min-positives", type=int, default=5)
    args = parser.parse_args()
    started = time.perf_counter()
    annotation = json.loads(args.data.read_text(encoding="utf-8"))
    result = zero_shot_auroc(args.folder, annotation, args.images, args.split, args.min_positives)
    result.update(
        split=args.split,
        seconds=round(time.perf_counter() - started, 1),
        **run_environment(),
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
