from __future__ import annotations


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch and ask torch for deterministic kernels, so CPU reruns give identical results."""
    import lightning

    lightning.seed_everything(seed, workers=True, verbose=False)
    import torch

    torch.use_deterministic_algorithms(True, warn_only=True)
