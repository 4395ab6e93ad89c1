from __future__ import annotations

import os

import lightning
import torch

from gradspace.errors import GradspaceError

# NumPy's seeds are 32-bit: a larger one fails in seed_everything with a traceback.
MAX_SEED = 2**32 - 1


def check_seed(value, name: str = "seed") -> int:
    """`value` as a seed, or one line naming the setting and its range."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise GradspaceError(f"{name}={value!r} is not a whole number in 0..{MAX_SEED} (seeds are 32-bit); "
                             f"set {name}=<integer 0..{MAX_SEED}>")
    return value


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch and ask torch for deterministic kernels, so CPU reruns give identical results."""
    lightning.seed_everything(seed, workers=True, verbose=False)
    torch.use_deterministic_algorithms(True, warn_only=True)


def set_torch_threads(threads) -> None:
    """An entry point's `torch_threads`: None keeps torch's default (all cores), else that many CPU threads."""
    if threads is None:
        return

    # More threads than CPUs only slow torch down, and OpenMP allocates every thread's state at once: a billion
    # ended in "libgomp: Out of memory allocating 216000001344 bytes" and exit 1.
    cpus = os.cpu_count() or 1
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= cpus:
        raise GradspaceError(f"torch_threads={threads!r} is not a whole number in 1..{cpus} (this machine's CPUs); "
                             f"set torch_threads=<threads> or null")

    torch.set_num_threads(threads)
