"""One FTGD job from a resolved Hydra config: fine-tune, measure, write `results.json`, close the W&B run."""

from __future__ import annotations

import time
from pathlib import Path

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from gradspace.data.suite import prepare_task_data
from gradspace.errors import GradspaceError
from gradspace.ftgd.callbacks import HeldoutLoss, TransferEvaluation
from gradspace.ftgd.datamodule import FTGDDataModule, heldout_sentences
from gradspace.ftgd.masks import MaskConfig
from gradspace.ftgd.module import FTGDModule
from gradspace.ftgd.objectives import check_objective
from gradspace.models.loading import load_model
from gradspace.utils.io import write_results
from gradspace.utils.run_config import loggable_config, plain_section
from gradspace.utils.seeding import seed_everything
from gradspace.utils.wandb_setup import finish_wandb, logger_from_config

RESULTS_FILE = "results.json"


def run_label(cfg: DictConfig) -> str:
    mask = cfg.ftgd.mask
    parts = [f"{cfg.model.name}@{cfg.model.revision}", cfg.task.name, cfg.objective.name]
    if mask.kind != "none":
        parts.append(f"{mask.kind}{mask.density:g}-{mask.scope}-{mask.schedule}")
    return "-".join(str(part) for part in parts)


def build_callbacks(cfg: DictConfig) -> tuple[list[L.Callback], TransferEvaluation, HeldoutLoss]:
    callbacks = [hydra.utils.instantiate(node) for node in (cfg.get("callbacks") or {}).values() if node and "_target_" in node]
    if not cfg.trainer.get("enable_checkpointing", True):  # e.g. debug=fdr: checkpointing off wins over the callbacks
        callbacks = [cb for cb in callbacks if not isinstance(cb, ModelCheckpoint)]
    transfer = [cb for cb in callbacks if isinstance(cb, TransferEvaluation)]
    heldout = [cb for cb in callbacks if isinstance(cb, HeldoutLoss)]
    if len(transfer) != 1 or len(heldout) != 1:
        raise GradspaceError(
            "an FTGD run needs exactly one TransferEvaluation and one HeldoutLoss callback (the results are built "
            "from them); use callbacks=default or add them to your callbacks config"
        )
    return callbacks, transfer[0], heldout[0]


def run(cfg: DictConfig) -> dict:
    """Fine-tune `cfg.model` on `cfg.task` with `cfg.objective`; return (and on rank 0 write) the results."""
    objective = str(cfg.objective.name)
    check_objective(objective)
    mask_config = MaskConfig(**plain_section(cfg.ftgd.mask))
    if objective == "lm" and mask_config.active:
        raise GradspaceError("the lm baseline has no gradient differential to mask; use ftgd.mask.kind=none with objective=lm")
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path and not Path(ckpt_path).is_file():
        raise GradspaceError(f"ckpt_path={ckpt_path} is not a file; point it at a .ckpt from a previous run's checkpoints/")
    output_dir = Path(cfg.paths.output_dir)
    cache_dir = Path(cfg.paths.cache_dir).expanduser()
    seed_everything(int(cfg.seed))
    threads_before = torch.get_num_threads()
    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    try:
        return _fit_and_measure(cfg, objective, mask_config, ckpt_path, output_dir, cache_dir)
    finally:
        finish_wandb()
        torch.set_num_threads(threads_before)


def _fit_and_measure(cfg: DictConfig, objective: str, mask_config: MaskConfig, ckpt_path: str | None,
                     output_dir: Path, cache_dir: Path) -> dict:
    # The pairs first: a bad task or data file should fail before minutes of model loading.
    task_data = prepare_task_data(cfg.task, cfg.data, cfg.model, cache_dir, cfg.paths.get("blimp_dir"))
    loaded = load_model(cfg.model, cache_dir, device="cpu")
    datamodule = FTGDDataModule(
        loaded.tokenizer, task_data, heldout_sentences(cfg.heldout, cfg.model, task_data, cache_dir),
        objective=objective, batch_size=cfg.ftgd.batch_size, seed=int(cfg.seed),
    )
    module = FTGDModule(loaded.model, objective, hydra.utils.instantiate(cfg.optimizer), mask_config)
    callbacks, transfer, heldout = build_callbacks(cfg)
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=callbacks,
        logger=logger_from_config(cfg, default_name=run_label(cfg), tags=[cfg.model.name, cfg.task.name, cfg.objective.name]) or False,
        max_steps=int(cfg.ftgd.max_steps), max_epochs=-1,
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path or None, weights_only=True)
    results = {
        "status": "ok",
        "model": {"name": loaded.name, "revision": loaded.revision},
        "task": str(cfg.task.name),
        "tasks_trained": list(task_data.tasks),
        "objective": objective,
        "mask": {**vars(mask_config), "actual_density": module.mask.density() if mask_config.active else 1.0},
        "seed": int(cfg.seed),
        "steps": int(trainer.global_step),
        "train_pairs": len(task_data.train),
        "phenomena": dict(task_data.suite.phenomena),
        "eval_before": transfer.before,
        "eval_after": transfer.after,
        "transfer": transfer.transfer(),
        "heldout_lm_loss": heldout.summary(),
        "config": loggable_config(cfg),
        "run": {"output_dir": str(output_dir), "checkpoint": _last_checkpoint(trainer)},
        "fit_seconds": time.perf_counter() - start,
    }
    if trainer.logger is not None:
        trainer.logger.log_metrics({"time/fit_seconds": results["fit_seconds"]}, step=trainer.global_step)
    if trainer.is_global_zero:
        path = write_results(output_dir, results)
        if isinstance(trainer.logger, WandbLogger):
            # Uploaded with the run so that `probe.py source.wandb_group=...` can rebuild the transfer matrix.
            trainer.logger.experiment.save(str(path), base_path=str(output_dir), policy="now")
    return results


def _last_checkpoint(trainer: L.Trainer) -> str | None:
    callback = trainer.checkpoint_callback
    if callback is None:
        return None
    return callback.last_model_path or callback.best_model_path or None


@rank_zero_only
def print_summary(results: dict, output_dir: str | Path) -> None:
    """Once per run, also under DDP, where every process returns the results."""
    print(summary(results, output_dir))


def summary(results: dict, output_dir: str | Path) -> str:
    """A few lines for the terminal: what was trained, the transfer row and the side effect."""
    heldout = results["heldout_lm_loss"]
    row = "  ".join(f"{task} {delta['accuracy']:+.3f}" for task, delta in results["transfer"].items())
    return (
        f"{results['model']['name']}@{results['model']['revision']} {results['task']} objective={results['objective']} "
        f"steps={results['steps']} ({results['fit_seconds']:.1f}s)\n"
        f"transfer (accuracy after - before): {row}\n"
        f"held-out LM loss {heldout['before']:.4f} -> {heldout['after']:.4f} ({heldout['delta']:+.4f})\n"
        f"results: {Path(output_dir) / RESULTS_FILE}"
    )
