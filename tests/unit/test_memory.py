import os
from pathlib import Path

import pytest
import torch

from gradspace.utils.memory import _glibc, return_freed_memory

pytestmark = pytest.mark.unit


def resident_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(_glibc() is None or not Path("/proc/self/statm").exists(), reason="malloc_trim is glibc's")
def test_freed_tensors_under_the_mmap_threshold_leave_the_process_when_returned():
    torch.empty(20 * 2**20, dtype=torch.uint8).fill_(1)  # freeing this mmapped 20 MB chunk raises glibc's mmap threshold
    blocks = [torch.ones(2**20) for _ in range(100)]  # 400 MB in 4 MB tensors, now from the heap
    kept = blocks[9::10]  # every tenth stays: the other 360 MB become holes that free() alone cannot give back
    before = resident_mb()
    del blocks
    freed = resident_mb()
    return_freed_memory()
    returned = resident_mb()
    assert len(kept) == 10
    assert before - freed < 100, "glibc gave the pages back without being asked: this test no longer shows anything"
    assert freed - returned > 250
