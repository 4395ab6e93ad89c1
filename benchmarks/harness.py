"""What every benchmark script shares: the machine description, thread pinning, timing and the ratio lines.

Benchmarks are scripts, not timed tests: each measures both sides of its ratios in one run on one machine and
prints them with the goal and whether it was met. They run from the repository root, e.g.
`python benchmarks/bench_ftgd_step.py`, so this module is imported as `harness`.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Callable

import lightning as L
import torch

from memory import PeakMemory, memory_profiler, profiled_peak


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line() -> str:
    """One line naming the machine a result came from; the load average shows how shared it was."""
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"machine: {cpu_model()}, {os.cpu_count()} cores, {device}; torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads; python {sys.version.split()[0]}; load average {load}"
    )


def pin_threads(threads: int) -> None:
    """Both sides of a ratio run with the same intra-op thread count (the machine is shared)."""
    torch.set_num_threads(max(1, threads))


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def synchronized(fn: Callable[[], object], device: str | torch.device) -> Callable[[], object]:
    """`fn` followed by a wait for the GPU's queued work, so that a timer around it measures the work itself."""
    if torch.device(device).type != "cuda":
        return fn

    def call() -> object:
        result = fn()
        torch.cuda.synchronize(device)
        return result

    return call


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each function, calls alternating A B A B ... so load changes hit all sides."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


@dataclass
class Goal:
    """A ratio and the bound it should meet (`at_most` or `at_least`)."""

    name: str
    ratio: float
    bound: float
    at_most: bool

    @property
    def met(self) -> bool:
        return self.ratio <= self.bound if self.at_most else self.ratio >= self.bound

    def line(self) -> str:
        relation = "<=" if self.at_most else ">="
        verdict = "MET" if self.met else "NOT MET"
        return f"ratio {self.name} = {self.ratio:.2f}x (goal {relation} {self.bound:g}x): {verdict}"


def print_header(title: str) -> None:
    print(f"== {title}")
    print(machine_line())


class StepTimer(L.Callback):
    """The start of training and the end of every step (whole steps, fetching the batch included; on a GPU once its
    queued work is done), and with `profile_step` the tensor-memory peak of that step, which is then left untimed
    (the profiler slows it)."""

    def __init__(self, profile_step: int | None = None) -> None:
        self.profile_step = profile_step
        self.start: float | None = None
        self.ends: list[float] = []
        self.seconds: list[float] = []  # each timed step, from the end of the one before
        self.peak: PeakMemory | None = None
        self._profiler = None

    def now(self, trainer) -> float:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)
        return time.perf_counter()

    def on_train_start(self, trainer, *args, **kwargs) -> None:
        self.start = self.now(trainer)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == self.profile_step:
            self._profiler = memory_profiler()
            self._profiler.__enter__()

    def on_train_batch_end(self, trainer, *args, **kwargs) -> None:
        now = self.now(trainer)
        if self._profiler is not None:
            self._profiler.__exit__(None, None, None)
            self.peak, self._profiler = profiled_peak(self._profiler), None
            now = self.now(trainer)
        else:
            self.seconds.append(now - (self.ends[-1] if self.ends else self.start))
        self.ends.append(now)
