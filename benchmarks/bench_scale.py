"""How the data path scales with the number of studies: seconds per 1k studies and peak memory, per stage.

For each size it synthesises MIMIC-CXR-JPG style inputs (split, metadata and CheXpert CSVs, one free-text report file
per study with FINDINGS and IMPRESSION sections from the phantom benchmark's templates; a frontal and a lateral
dicom per study; a tenth of the studies without a CheXpert row, so the labeler labels them), then times:

1. ``convert``: :func:`cxrgen.data.mimic_cxr.convert_mimic_cxr`;
2. ``label``: :func:`cxrgen.labeler.label_reports` over every report (worker processes for large inputs);
3. ``dataset``: :func:`cxrgen.data.annotation.annotation_to_dataset_dict` (images undecoded, as training uses it;
   the image paths point at a few shared small PNGs, so the existence checks stay cheap and no pixels are stored);
4. ``loader``: one pass of a ``torch`` ``DataLoader`` with the CMCRL ``StudyCollator`` (batch 64, 32 px images).

Each size runs in a fresh process; "peak RSS" is that process's peak (ru_maxrss) after each stage.

    python benchmarks/bench_scale.py --sizes 1000 10000 100000 300000 --workdir WORK_DIR
"""

import argparse
import gzip
import json
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

STAGES = ("convert", "label", "dataset", "loader")
SHARED_IMAGES = 4


def synthesize(root: Path, studies: int, seed: int = 0) -> None:
    """MIMIC-CXR-JPG style inputs for ``studies`` studies under ``root`` (see the module docstring)."""
    from cxrgen.data.phantom_benchmark import sample_labels, templated_report
    from cxrgen.labels import CHEXPERT_OBSERVATIONS

    rng = random.Random(seed)
    codes = {0: "", 1: "1.0", 2: "0.0", 3: "-1.0"}
    split_rows, metadata_rows, chexpert_rows = [], [], []
    for index in range(studies):
        subject, study = 10000000 + index // 3, 50000000 + index
        split = "test" if index % 20 == 0 else "validate" if index % 20 == 1 else "train"
        labels = sample_labels(rng)
        folder = root / f"files/p{str(subject)[:2]}/p{subject}"
        folder.mkdir(parents=True, exist_ok=True)
        findings = templated_report(labels, rng)
        (folder / f"s{study}.txt").write_text(
            f"FINAL REPORT\n EXAMINATION: CHEST (PA AND LAT)\n\n FINDINGS: {findings}\n\n IMPRESSION: {findings}\n"
        )
        for view, position in (("a", "PA"), ("b", "LATERAL")):
            dicom = f"{study:08d}-{view}"
            split_rows.append(f"{dicom},{study},{subject},{split}")
            metadata_rows.append(f"{dicom},{position}")
        if index % 10:
            chexpert_rows.append(f"{subject},{study}," + ",".join(codes[code] for code in labels))
    with gzip.open(root / "mimic-cxr-2.0.0-split.csv.gz", "wt") as stream:
        stream.write("dicom_id,study_id,subject_id,split\n" + "\n".join(split_rows) + "\n")
    (root / "mimic-cxr-2.0.0-metadata.csv").write_text("dicom_id,ViewPosition\n" + "\n".join(metadata_rows) + "\n")
    (root / "mimic-cxr-2.0.0-chexpert.csv").write_text(
        "subject_id,study_id," + ",".join(CHEXPERT_OBSERVATIONS) + "\n" + "\n".join(chexpert_rows) + "\n"
    )


def measure(studies: int, workdir: Path) -> dict:
    """Synthesise ``studies`` studies under ``workdir`` and time each stage; returns seconds and peak RSS."""
    import torch
    from PIL import Image

    from cxrgen.data.annotation import annotation_to_dataset_dict
    from cxrgen.data.collators import StudyCollator
    from cxrgen.data.mimic_cxr import convert_mimic_cxr
    from cxrgen.labeler import label_reports
    from cxrgen.processing.image_processing_cxr import CxrImageProcessor
    from cxrgen.processing.processing_cmcrl import CmcrlProcessor
    from cxrgen.processing.tokenization import build_report_tokenizer

    torch.set_num_threads(1)
    root = workdir / f"mimic-{studies}"
    shutil.rmtree(root, ignore_errors=True)
    start = time.perf_counter()
    synthesize(root, studies)
    result = {"studies": studies, "synthesise_s": time.perf_counter() - start}

    def stage(name, work):
        start = time.perf_counter()
        value = work()
        result[f"{name}_s"] = time.perf_counter() - start
        result[f"{name}_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return value

    annotation = stage("convert", lambda: convert_mimic_cxr(root))
    reports = [entry["report"] for entries in annotation.values() for entry in entries]
    stage("label", lambda: label_reports(reports))
    images = root / "shared"
    images.mkdir()
    for index in range(SHARED_IMAGES):
        Image.new("L", (32, 32), 40 * index).save(images / f"{index}.png")
    for entries in annotation.values():
        for index, entry in enumerate(entries):
            entry["image_path"] = [f"{index % SHARED_IMAGES}.png"]
    dataset = stage("dataset", lambda: annotation_to_dataset_dict(annotation, images, decode_images=False))
    processor = CmcrlProcessor(
        image_processor=CxrImageProcessor(size={"height": 32, "width": 32}, num_views=1),
        tokenizer=build_report_tokenizer(dataset["train"]["report"][:1000]),
    )
    loader = torch.utils.data.DataLoader(dataset["train"], batch_size=64, collate_fn=StudyCollator(processor))
    stage("loader", lambda: sum(batch["pixel_values"].shape[0] for batch in loader))
    result["entries"] = sum(len(entries) for entries in annotation.values())
    shutil.rmtree(root)
    return result


def main() -> int:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000, 300000])
    parser.add_argument("--workdir", type=Path, default=Path("bench-scale"))
    parser.add_argument("--single", type=int, help="measure one size in this process and print JSON")
    args = parser.parse_args()
    if args.single is not None:
        print(json.dumps(measure(args.single, args.workdir)))
        return 0
    print("| studies | stage | s per 1k studies | peak RSS (MiB) |")
    print("|---:|---|---:|---:|")
    for size in args.sizes:
        command = [sys.executable, __file__, "--single", str(size), "--workdir", str(args.workdir)]
        result = json.loads(
            subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1]
        )
        for name in STAGES:
            print(
                f"| {size} | {name} | {1000 * result[f'{name}_s'] / size:.3f} | "
                f"{result[f'{name}_peak_rss_mib']:.0f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
