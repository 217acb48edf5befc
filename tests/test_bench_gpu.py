"""The plumbing of benchmarks/bench_gpu.py at tiny shapes on the CPU (the benchmark itself needs a CUDA GPU)."""

import json
import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_smoke_run_measures_every_part_without_error(tmp_path):
    output = tmp_path / "gpu.json"
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCHMARKS), os.environ.get("PYTHONPATH", "")])}
    completed = subprocess.run(
        [sys.executable, str(BENCHMARKS / "bench_gpu.py"), "--smoke", "--steps", "1", "--output", str(output)],
        capture_output=True,
        text=True,
        env=environment,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(output.read_text())
    assert not [part for part in ("cmcrl", "trrg", "trrg7b") if "error" in results[part]], results
    assert results["environment"]["device"] == "cpu"
    assert set(results["cmcrl"]["batch16"]) == {"float32", "bf16_autocast", "bf16_speedup_train"}
    assert results["cmcrl"]["batch16"]["float32"]["generate_beam3"]["tokens"] == [16, 60]
    quantized = results["trrg7b"]
    assert quantized["nf4_linear_layers"] == 2 * 7  # every linear layer of the 2-layer LLM, nothing else
    assert quantized["generate_greedy_lora"]["output_shape"][1] == quantized["decode_nf4"]["trrg"]["output_shape"][1]
    assert len(quantized["train_bf16"]["losses"]) == 2 + 1  # warm-up steps, then the timed one
