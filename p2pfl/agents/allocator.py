"""Keep freed memory in the process instead of handing it back to the kernel after every step.

glibc gives a freed block of more than 128 KB back to the kernel (munmap, or trimming the heap's top) and
faults fresh zeroed pages in for the next one. A training step frees and reallocates the same activations
and gradients every time: measured over a packed 8-agent LeNet-5 run, 2.2 million page faults in 8,000
agent steps, about 280 per step and 14% of the CPU in the kernel. With the thresholds below the blocks
are reused from the heap (0.19 million faults for the same run, the local-only floor's s/round 16% lower;
`perf stat -a -e page-faults` around the run in benchmarks/FOOTPRINT_HISTORY.md, "Freed memory stays in the
process"); the heap then keeps its peak, which is what a step needs anyway.
"""

from __future__ import annotations

import ctypes
import logging

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 2**20  # glibc's ceiling for this setting on 64-bit (HEAP_MAX_SIZE / 2)
TRIM_THRESHOLD_BYTES = 256 * 2**20

log = logging.getLogger("p2pfl.allocator")


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; False where there is no glibc (nothing to do)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
        return libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1 and ok
    except (OSError, AttributeError):
        log.debug("no glibc mallopt here: the allocator keeps its defaults")
        return False
