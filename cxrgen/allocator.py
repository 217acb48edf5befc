"""Keep the memory a training step frees for the next step, instead of handing it back to the kernel.

On Linux, glibc's malloc serves every block above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and gives
it back with ``munmap`` when the tensor is freed. A CMCRL training step at the papers' size allocates and frees
several GiB of such blocks (the ResNet's activations and their gradients), so every step the kernel maps, faults in
and zeroes them again, page by page: on a 2-core machine a fifth of the step's wall time in a long run, a quarter in
its first steps (benchmarks/RESULTS.md). PyTorch has no caching allocator on the CPU; glibc can be told to serve large blocks from its
heap and never to shrink it (``mallopt``), so that each step reuses what the step before freed.

The cost is memory: the process keeps its largest footprint once reached, and the heap fragments before it settles
(a freed block that small allocations pin in place is not reused for a block of its own size plus memalign's slack):
the CMCRL training peak at batch 16 settled after 7 steps at 8.8 GiB, against 7.4-7.5 GiB with glibc's defaults, and
the TRRG demo's grows by 0.08 GiB; one 64 MiB tensor freed and allocated again settles after a few rounds at a heap
of several times its size. Every `cxrgen` command calls :func:`keep_freed_memory` first, and
`TrainingStage.run` before it trains (for the Python API: the demo, the benchmark); set
``CXRGEN_RETURN_FREED_MEMORY=1`` to keep glibc's defaults.
"""

import ctypes
import logging
import os
import platform

logger = logging.getLogger(__name__)

OPT_OUT_VARIABLE = "CXRGEN_RETURN_FREED_MEMORY"
# mallopt parameters from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse in this process (no ``mmap`` for large blocks, no trimming of
    the heap). Returns whether it did: False on a libc other than glibc, or when ``CXRGEN_RETURN_FREED_MEMORY`` is
    set to anything but ``0`` or an empty string. It changes how memory is allocated, never what is computed."""
    if os.environ.get(OPT_OUT_VARIABLE, "0") not in ("", "0"):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    # glibc's manual: "Setting M_TRIM_THRESHOLD to -1 disables trimming completely"; M_MMAP_MAX 0 "disables the use
    # of mmap(2) for servicing large allocation requests". mallopt returns 1 on success.
    applied = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, -1) == 1
    if applied:
        logger.debug("Freed memory is kept for reuse by this process (%s=1 keeps glibc's defaults).", OPT_OUT_VARIABLE)
    return applied
