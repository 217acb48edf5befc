"""CPU-bound pure-Python work spread over the machine's cores, with results in input order.

Report labeling and phantom rendering are pure Python and NumPy loops that hold the GIL, so threads do not help;
they run in a pool of worker processes instead. On Linux the workers are forked: they start at once with every
module already imported (a spawned worker would import torch and transformers again, seconds per worker, through
the data modules), and they run only pure Python, NumPy and PIL code, never torch, whose thread pools are what makes
forking a multi-threaded process unsafe. Elsewhere they are spawned. Small inputs stay in the calling process.
"""

import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the platform reports it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def worker_count(num_items: int, min_items_per_worker: int, processes: int | None = None) -> int:
    """How many processes ``num_items`` items get: ``processes`` when given, else one per ``min_items_per_worker``
    items up to :func:`available_cores`; 1 means the calling process does the work."""
    if processes is not None:
        if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
            raise ValueError(f"processes must be a positive integer or None, got {processes!r}.")
        return min(processes, max(1, num_items))
    return max(1, min(available_cores(), num_items // max(1, min_items_per_worker)))


def map_chunks(
    function: Callable[[Sequence, Any], list], items: Sequence, argument: Any = None, processes: int = 1
) -> list:
    """``function(chunk, argument)`` over contiguous chunks of ``items``, concatenated in input order.

    ``function`` takes a chunk and returns one result per item; with ``processes > 1`` it must be picklable (a
    module-level function) and so must ``argument``. The chunks are a few per process, so the workers stay busy
    when items cost unequal time, while each task still amortises its pickling.
    """
    if processes <= 1 or len(items) <= 1:
        return list(function(items, argument))
    num_chunks = min(len(items), processes * 4)
    bounds = [len(items) * index // num_chunks for index in range(num_chunks + 1)]
    chunks = [items[start:end] for start, end in zip(bounds, bounds[1:])]
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    with ProcessPoolExecutor(max_workers=processes, mp_context=context) as pool:
        results = []
        for part in pool.map(function, chunks, [argument] * len(chunks)):
            results.extend(part)
    return results
