"""Time the phases of `cxrgen demo` that are not training, old code against new, and check their outputs match.

The demo's training stages are replaced by the same stages cut to ``--train-steps`` steps, and the model's
generation by a stand-in that writes, for each test study, the next test study's reference report (a barely trained
model would write every report up to the length limit, which no trained demo model does, and model generation
speed is measured in ``bench_cmcrl.py`` / ``bench_trrg.py``). So a run costs the demo's data build, its
evaluation (loading, image checks, metrics with METEOR, the report with its figures) and its baselines, with
realistic report texts, and no generation.

    python benchmarks/bench_demo_overhead.py --trees OLD_TREE NEW_TREE --repeat 3 --output OUTPUT_DIR

runs each tree (a checkout of the package: its root goes first on PYTHONPATH) in a fresh process, alternating
``--repeat`` times, prints each phase's seconds per tree, the old/new ratio of every pair (median, min-max), and
fails when the two trees wrote different data files, predictions or metrics. ``--single DIR`` runs one demo into
DIR with whatever ``cxrgen`` is importable and prints its timings as JSON (what ``--trees`` runs per tree).
"""

import argparse
import hashlib
import json
import statistics
import sys
from pathlib import Path

from measurement import run_json

PHASES = ("build data", "train", "evaluate model", "baselines", "total")
# Files whose content depends on timing or on the folder they were written to.
VOLATILE = {"results.json", "results.md", "metrics.json", "report.md", "README.md", "trainer_state.json"}


def run_single(output_dir: Path, train_steps: int, method: str) -> dict:
    """One demo into ``output_dir`` with every stage cut to ``train_steps`` steps; returns its phase timings."""
    import cxrgen.demo as demo
    import cxrgen.evaluation.report as report

    # The old trees of RESULTS.md call their training `_train`; it became the public `train_recipe`.
    train_name = "train_recipe" if hasattr(demo, "train_recipe") else "_train"
    train = getattr(demo, train_name)

    def short_train(spec, stages, *args, **kwargs):
        cut = [{**entry, "training": {**entry["training"], "max_steps": train_steps}} for entry in stages]
        return train(spec, cut, *args, **kwargs)

    def stand_in_generation(generator, studies, **kwargs):
        ids = [Path(views[0]).parent.name for views in studies]
        reports = {
            entry["id"]: entry["report"] for entry in demo.read_annotation(output_dir / "data/annotation.json")["test"]
        }
        return [{"report": reports[ids[(index + 1) % len(ids)]]} for index in range(len(ids))]

    setattr(demo, train_name, short_train)
    report.generate_reports = stand_in_generation
    summary = demo.run_demo(output_dir, method=method, echo=lambda line: None)
    return summary["wall_time_seconds"]


def fingerprint(output_dir: Path) -> dict:
    """Digest of every output file that must not change, plus the metrics of every system."""
    digests = {}
    for path in sorted(output_dir.rglob("*")):
        if path.is_file() and path.name not in VOLATILE:
            # Prediction records name their image files by absolute path, which holds the run's folder.
            content = path.read_bytes().replace(str(output_dir).encode(), b"<output>")
            digests[str(path.relative_to(output_dir))] = hashlib.sha256(content).hexdigest()
    results = json.loads((output_dir / "results.json").read_text())
    return {"files": digests, "metrics": results["metrics"]}


def compare(trees: list[str], repeat: int, output: Path, train_steps: int, method: str) -> int:
    """Run each tree ``repeat`` times, alternating; print timings and ratios; return 1 when outputs differ."""
    times = {tree: [] for tree in trees}
    prints = {}
    for round_index in range(repeat):
        for tree_index, tree in enumerate(trees):
            folder = output / f"run{round_index}-tree{tree_index}"
            arguments = ["--single", str(folder), "--train-steps", str(train_steps), "--method", method]
            timing = run_json(__file__, arguments, pythonpath=[tree])
            times[tree].append(timing)
            print(f"round {round_index} tree {tree_index}: {json.dumps(timing)}", flush=True)
            prints.setdefault(tree, fingerprint(folder))
    old, new = trees
    print("\n| phase | old median (s) | new median (s) | old/new ratio: median (min-max) |")
    print("|---|---:|---:|---:|")
    for phase in (*PHASES, "not training"):
        olds = [_seconds(t, phase) for t in times[old]]
        news = [_seconds(t, phase) for t in times[new]]
        ratios = [a / b for a, b in zip(olds, news)]
        print(
            f"| {phase} | {statistics.median(olds):.1f} | {statistics.median(news):.1f} | "
            f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) |"
        )
    a, b = prints[old], prints[new]
    differing = sorted(
        name for name in set(a["files"]) | set(b["files"]) if a["files"].get(name) != b["files"].get(name)
    )
    same_metrics = a["metrics"] == b["metrics"]
    print(f"\n{len(a['files'])} output files compared: {len(differing)} differ {differing[:10]}")
    print(f"metrics identical: {same_metrics}")
    return 0 if not differing and same_metrics else 1


def _seconds(timing, phase):
    return timing["total"] - timing["train"] if phase == "not training" else timing[phase]


def main() -> int:
    """Command-line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trees", nargs=2, metavar=("OLD", "NEW"), help="two package checkouts to compare")
    parser.add_argument("--single", type=Path, help="run one demo into this folder and print its timings")
    parser.add_argument("--output", type=Path, default=Path("bench-demo-overhead"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=2)
    parser.add_argument("--method", default="cmcrl")
    args = parser.parse_args()
    if args.single is not None:
        print(json.dumps(run_single(args.single, args.train_steps, args.method)))
        return 0
    if not args.trees:
        parser.error("give --trees OLD NEW or --single DIR")
    return compare(args.trees, args.repeat, args.output, args.train_steps, args.method)


if __name__ == "__main__":
    sys.exit(main())
