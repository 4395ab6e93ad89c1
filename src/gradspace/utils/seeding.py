from __future__ import annotations


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch and ask torch for deterministic kernels, so CPU reruns give identical results."""
    import lightning

    lightning.seed_everything(seed, workers=True, verbose=False)
    import torch

    torch.use_deterministic_algorithms(True, warn_only=True)


def set_torch_threads(threads) -> None:
    """An entry point's `torch_threads`: None keeps torch's default (all cores), else that many CPU threads."""
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        from gradspace.errors import GradspaceError

        raise GradspaceError(f"torch_threads={threads!r} is not a whole number >= 1; set torch_threads=<threads> or null")
    import torch

    torch.set_num_threads(threads)
