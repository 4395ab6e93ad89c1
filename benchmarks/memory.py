"""Peak tensor memory of one call, on CPU or GPU, for benchmarks that compare memory side by side.

On a GPU this is the CUDA allocator's peak. On the CPU, where torch keeps no allocator statistics, it is the peak
of torch's memory profiler timeline (every tensor the call touches, parameters included, by category), which is
what `max_memory_allocated` would report on a GPU; process RSS would mix in the Python heap and allocator caching.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class PeakMemory:
    peak_bytes: int  # everything live at the peak: parameters, gradients, optimizer state, activations
    start_bytes: int  # what was live when the call started

    @property
    def added_bytes(self) -> int:
        """What the call itself needed on top of what it found (activations, temporaries, new gradients)."""
        return self.peak_bytes - self.start_bytes


def peak_memory(fn: Callable[[], object], device: torch.device) -> PeakMemory:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return PeakMemory(torch.cuda.max_memory_allocated(device), start)
    with memory_profiler() as prof:
        fn()
    return profiled_peak(prof)


def memory_profiler():
    """The CPU profiler set up for `profiled_peak` (enter it around the work to measure)."""
    from torch.profiler import ProfilerActivity, profile

    return profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True)


def profiled_peak(prof) -> PeakMemory:
    """The tensor memory peak of what a finished `memory_profiler()` recorded."""
    from torch.profiler._memory_profiler import MemoryProfileTimeline  # private, but the only CPU timeline torch has

    _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline("cpu")
    totals = [sum(row) for row in sizes]
    return PeakMemory(int(max(totals)), int(totals[0]))


def mib(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:.1f} MiB"
