"""cxrgen.allocator: after keep_freed_memory() a large tensor reuses freed memory instead of faulting in new pages."""

import json
import os
import platform
import subprocess
import sys

import pytest

from cxrgen.allocator import OPT_OUT_VARIABLE

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only"
)

# Page faults of fresh 64 MiB tensors in a process of its own (the setting is process-wide): one with glibc's
# defaults, then a run of them after keep_freed_memory(). The heap first grows (a freed block that small allocations
# pin in place is not reused for a block of its own size plus memalign's slack) and settles within a few tensors;
# from then on each tensor reuses freed memory, which is what every later training step sees.
SCRIPT = """
import json, resource, torch
from cxrgen.allocator import keep_freed_memory

def faults_of_a_fresh_tensor():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(16 * 1024 * 1024)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

faults_of_a_fresh_tensor()
system = faults_of_a_fresh_tensor()
kept = keep_freed_memory()
after = [faults_of_a_fresh_tensor() for _ in range(30)]
print(json.dumps({"kept": kept, "system": system, "after": after}))
"""


def maps_small_pages() -> bool:
    """Whether a fresh mapping faults in page by page (not so where transparent huge pages are always on)."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as settings:
            return "[always]" not in settings.read()
    except OSError:
        return True


def run_script(opt_out: str | None) -> dict:
    environment = {key: value for key, value in os.environ.items() if key != OPT_OUT_VARIABLE}
    if opt_out is not None:
        environment[OPT_OUT_VARIABLE] = opt_out
    completed = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=environment, check=True
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_freed_memory_is_reused_without_page_faults():
    result = run_script(opt_out=None)
    pages = 64 * 1024 * 1024 // os.sysconf("SC_PAGE_SIZE")
    assert result["kept"] is True
    if maps_small_pages():
        assert result["system"] > pages // 2  # glibc maps every block this large afresh
    assert max(result["after"][-10:]) < pages // 100


@pytest.mark.parametrize("opt_out", ["1", "yes"])
def test_the_opt_out_variable_keeps_glibc_defaults(opt_out):
    result = run_script(opt_out=opt_out)
    pages = 64 * 1024 * 1024 // os.sysconf("SC_PAGE_SIZE")
    assert result["kept"] is False
    if maps_small_pages():
        assert min(result["after"][-10:]) > pages // 2
