"""What an FTGD run is called and what it prints."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from gradspace.ftgd.results import TrainResults
from gradspace.utils.io import RESULTS_FILE
from gradspace.utils.run_config import redact_environment_secrets


def run_label(cfg: DictConfig) -> str:
    mask = cfg.ftgd.mask
    parts = [f"{cfg.model.name}@{cfg.model.revision}", cfg.task.name, cfg.objective.name]
    if mask.kind != "none":
        parts.append(f"{mask.kind}{mask.density:g}-{mask.scope}-{mask.schedule}")
    return "-".join(str(part) for part in parts)


@rank_zero_only
def print_summary(results: TrainResults, output_dir: str | Path) -> None:
    """Once per run, also under DDP, where every process returns the results."""
    print(redact_environment_secrets(summary(results, output_dir)))


def summary(results: TrainResults, output_dir: str | Path) -> str:
    """A few lines for the terminal: what was trained, the transfer row and the side effect."""
    heldout = results.heldout_lm_loss
    row = "  ".join(f"{task} {delta['accuracy']:+.3f}" for task, delta in results.transfer.items())
    return (
        f"{results.model['name']}@{results.model['revision']} {results.task} objective={results.objective} "
        f"steps={results.steps} ({results.fit_seconds:.1f}s)\n"
        f"transfer (accuracy after - before): {row}\n"
        f"held-out LM loss {heldout['before']:.4f} -> {heldout['after']:.4f} ({heldout['delta']:+.4f})\n"
        f"results: {Path(output_dir) / RESULTS_FILE}"
    )
