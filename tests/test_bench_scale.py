"""The plumbing of benchmarks/bench_scale.py on a tiny size (the benchmark itself is run by hand)."""

import importlib.util
from pathlib import Path

from cxrgen.data.mimic_cxr import convert_mimic_cxr

SPEC = importlib.util.spec_from_file_location(
    "bench_scale", Path(__file__).resolve().parents[1] / "benchmarks" / "bench_scale.py"
)
bench_scale = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bench_scale)


def test_synthesised_inputs_convert_and_every_stage_runs(tmp_path):
    bench_scale.synthesize(tmp_path / "inputs", 30)
    annotation = convert_mimic_cxr(tmp_path / "inputs")
    entries = [entry for split in annotation.values() for entry in split]
    assert len(entries) == 30 and {len(entry["image_path"]) for entry in entries} == {1}
    assert sum("labels" not in entry for entry in entries) == 3
    result = bench_scale.measure(40, tmp_path / "work")
    assert result["entries"] == 40
    assert all(result[f"{stage}_s"] >= 0 for stage in bench_scale.STAGES)
