"""Time `CxrImageProcessor` on training-size batches, old code against new, and check their pixel values match.

A batch is 32 two-view studies of random 8-bit grayscale PIL images (what `datasets` hands the collators) of
`--source-size` pixels, processed to `--size` pixels, as every training collator calls it once per step.

    python benchmarks/bench_image_processor.py --trees OLD_TREE NEW_TREE [--repeat 7] [--source-size 64 --size 64]

runs each tree (a checkout of the package: its root goes first on PYTHONPATH) in a fresh process, alternating
`--repeat` times, prints the milliseconds per batch of each run, the old/new ratio of every pair (min, median, max),
and fails when the two trees gave different pixel values. `--single` times whatever `cxrgen` is importable.
"""

import argparse
import hashlib
import json
import time

from measurement import run_json, spread

STUDIES, VIEWS, BATCHES = 32, 2, 30


def run_single(source_size: int, size: int, threads: int) -> dict:
    """Milliseconds per batch (median over the batches) and a hash of every batch's pixel values."""
    import numpy as np
    import torch
    from PIL import Image

    from cxrgen.processing.image_processing_cxr import CxrImageProcessor

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    batches = [
        [
            [Image.fromarray(rng.integers(0, 256, (source_size, source_size), dtype=np.uint8)) for _ in range(VIEWS)]
            for _ in range(STUDIES)
        ]
        for _ in range(BATCHES)
    ]
    processor = CxrImageProcessor(size={"height": size, "width": size})
    processor(batches[0], return_tensors="pt")  # warm-up
    digest, times = hashlib.sha256(), []
    for batch in batches:
        started = time.perf_counter()
        pixel_values = processor(batch, return_tensors="pt")["pixel_values"]
        times.append((time.perf_counter() - started) * 1000)
        digest.update(pixel_values.numpy().tobytes())
    return {"ms_per_batch": round(sorted(times)[len(times) // 2], 3), "pixel_values_sha256": digest.hexdigest()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", nargs=2, metavar=("OLD", "NEW"), help="two package checkouts to compare")
    parser.add_argument("--single", action="store_true", help="time the importable cxrgen and print JSON")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--source-size", type=int, default=64, help="side of the input images, pixels")
    parser.add_argument("--size", type=int, default=64, help="side the processor resizes to, pixels")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    options = ["--source-size", str(args.source_size), "--size", str(args.size), "--threads", str(args.threads)]
    if args.single:
        print(json.dumps(run_single(args.source_size, args.size, args.threads)))
        return 0
    if not args.trees:
        parser.error("give --trees OLD NEW or --single")
    runs = {tree: [] for tree in args.trees}
    for round_index in range(args.repeat):
        order = args.trees if round_index % 2 == 0 else args.trees[::-1]
        for tree in order:
            runs[tree].append(run_json(__file__, ["--single", *options], pythonpath=[tree]))
    old, new = (runs[tree] for tree in args.trees)
    same = {run["pixel_values_sha256"] for run in old + new}
    report = {
        "ms_per_batch": {tree: [run["ms_per_batch"] for run in runs[tree]] for tree in args.trees},
        "old_over_new": spread([a["ms_per_batch"] / b["ms_per_batch"] for a, b in zip(old, new)]),
        "same_pixel_values": len(same) == 1,
        "batch": f"{STUDIES} studies x {VIEWS} views, {args.source_size} px -> {args.size} px",
        "threads": args.threads,
    }
    print(json.dumps(report, indent=2))
    return 0 if report["same_pixel_values"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
