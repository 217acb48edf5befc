"""Helpers shared by the benchmark scripts: peak memory, one measurement in a fresh process, the spread of ratios.

Only the standard library, so that a measured process that imports this module carries no extra weight.
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable


def peak_rss_mib() -> float:
    """This process's peak resident set (covers torch's native allocations, which tracemalloc does not see)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def run_json(script: str, arguments: list[str], pythonpath: list[str] = ()) -> dict:
    """Run `python script arguments` in a fresh process, `pythonpath` first on its path; the JSON object it printed
    last. The process's stderr is shown if it fails."""
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join([*pythonpath, environment.get("PYTHONPATH", "")])
    completed = subprocess.run(
        [sys.executable, os.path.abspath(script), *arguments], capture_output=True, text=True, env=environment
    )
    if completed.returncode:
        raise RuntimeError(f"{os.path.basename(script)} {' '.join(arguments)} failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def spread(values: list[float], digits: int = 2) -> list[float]:
    """[min, median, max] of `values` (the upper median for an even count)."""
    ordered = sorted(values)
    return [round(ordered[0], digits), round(ordered[len(ordered) // 2], digits), round(ordered[-1], digits)]


def timed_steps(step: Callable[[], float], warmup_steps: int, train_steps: int) -> dict:
    """Run ``warmup_steps`` then ``train_steps`` training steps (``step`` returns the loss): every loss and step time,
    ``seconds`` / ``cpu_seconds`` the medians of the timed steps, and this process's peak memory after them."""
    losses, seconds, cpu_seconds = [], [], []
    for _ in range(warmup_steps + train_steps):
        start, cpu_start = time.perf_counter(), time.process_time()
        losses.append(round(float(step()), 5))
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu_start)
    return {
        "loss": losses[0],
        "losses": losses,
        "first_step_seconds": round(seconds[0], 2),
        "step_seconds": [round(value, 2) for value in seconds],
        "seconds": round(statistics.median(seconds[warmup_steps:]), 2),
        "cpu_seconds": round(statistics.median(cpu_seconds[warmup_steps:]), 2),
        "peak_rss_mib": round(peak_rss_mib(), 1),
    }
