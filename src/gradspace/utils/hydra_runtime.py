"""What Hydra knows about the running job: whether it is one job of a multirun, and of which sweep."""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode


def _multirun_config():
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    return hydra_cfg if hydra_cfg.mode == RunMode.MULTIRUN else None


def multirun_job_dir() -> Path | None:
    """The job's output directory inside a multirun, else None."""
    hydra_cfg = _multirun_config()
    return Path(hydra_cfg.runtime.output_dir) if hydra_cfg is not None else None


def sweep_group() -> str | None:
    """The multirun's sweep directory name, so the jobs of one sweep share a W&B group."""
    hydra_cfg = _multirun_config()
    return Path(hydra_cfg.sweep.dir).name if hydra_cfg is not None else None


def run_output_dir() -> Path | None:
    """The running job's output directory (a single run's or a sweep job's), else None."""
    return Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else None
