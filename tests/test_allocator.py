"""The allocator settings every agent process applies (p2pfl/agents/allocator.py)."""

import platform

import pytest

from p2pfl.agents.allocator import keep_freed_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_accepts_the_thresholds():
    """mallopt refuses an mmap threshold above its ceiling (32 MiB on 64-bit) and says so with 0: a value out of
    range would leave the kernel faulting pages in at every step, silently."""
    assert keep_freed_memory() is True
