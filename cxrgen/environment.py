"""What a measurement ran on, recorded beside every benchmark and demo result."""

import datetime
import os
import platform


def run_environment(torch_threads: int | list[int] | None = None) -> dict:
    """UTC time, Python / torch / transformers versions, torch threads, and the machine (architecture, OS, CPUs).

    `torch_threads` names the threads of the measured runs where they are not this process's (a script that times
    child processes); by default, this process's.

    torch and transformers are imported here rather than at module level, so that a benchmark script can record
    its environment without making the processes it measures import them.
    """
    import torch
    import transformers

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads() if torch_threads is None else torch_threads,
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs",
    }
