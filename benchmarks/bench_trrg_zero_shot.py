"""Zero-shot disease perception of a TRRG stage-1 folder: per-observation AUROC on an annotation split.

Reads a `cxrgen train trrg-contrastive` output folder (model, processor, `disease_prompt_embeds.safetensors`) and
an annotation; the ground truth of each study is its `labels` field when present (phantom data), else the
project labeler's reading of its report; positive = code 1, as the clinical-efficacy metrics count it. AUROC is
reported for observations with at least `--min-positives` positive studies (and at least one negative).

    python benchmarks/bench_trrg_zero_shot.py RUN/contrastive --data DATA/annotation.json --images DATA/images
"""

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors.torch import load_file
from sklearn.metrics import roc_auc_score
from transformers import AutoModel, AutoProcessor

from cxrgen.labeler import label_report
from cxrgen.labels import CHEXPERT_OBSERVATIONS, POSITIVE
from cxrgen.processing.image_processing_cxr import load_image
from cxrgen.trainers.trrg_contrastive import PROMPT_EMBEDS_NAME


def zero_shot_auroc(
    folder: Path, annotation: dict, images: Path, split: str, min_positives: int, batch_size: int = 64
) -> dict:
    """Per-observation AUROC of the folder's zero-shot probabilities on `split`, and their macro mean."""
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    image_processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True).image_processor
    prompt_embeds = load_file(folder / PROMPT_EMBEDS_NAME)["prompt_embeds"]
    entries = annotation[split]
    probabilities = []
    with torch.no_grad():
        for start in range(0, len(entries), batch_size):
            studies = [
                [load_image(images / path) for path in entry["image_path"]] for entry in entries[start:][:batch_size]
            ]
            batch = image_processor(studies, return_tensors="pt")
            probabilities.append(
                model.zero_shot(batch["pixel_values"], pixel_mask=batch.get("pixel_mask"), prompt_embeds=prompt_embeds)
            )
    scores = torch.cat(probabilities).numpy()
    truth = np.array(
        [[code == POSITIVE for code in entry.get("labels") or label_report(entry["report"])] for entry in entries]
    )
    per_observation = {}
    for index, name in enumerate(CHEXPERT_OBSERVATIONS):
        positives = int(truth[:, index].sum())
        if positives >= min_positives and positives < len(truth):
            per_observation[name] = {
                "auroc": round(float(roc_auc_score(truth[:, index], scores[:, index])), 4),
                "positives": positives,
            }
    macro = float(np.mean([value["auroc"] for value in per_observation.values()]))
    return {"macro_auroc": round(macro, 4), "observations": per_observation, "studies": len(entries)}


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
        python=platform.python_version(),
        torch=torch.__version__,
        transformers=transformers.__version__,
        machine=f"{platform.machine()} {platform.system()}, {torch.get_num_threads()} torch threads",
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
