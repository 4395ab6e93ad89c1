"""One FTGD job from a resolved Hydra config: fine-tune, measure, write `results.json`, close the W&B run."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import hydra
import lightning as L
import torch
from lightning.pytorch.strategies import SingleDeviceStrategy
from omegaconf import DictConfig, OmegaConf

from gradspace.data.suite import prepare_task_data, without_identical_tokenizations
from gradspace.errors import GradspaceError
from gradspace.ftgd.callbacks import BaseMeasurement, HeldoutLoss, TransferEvaluation, base_key, build_callbacks
from gradspace.ftgd.checks import (
    check_batch_size,
    check_pass_memory,
    check_resumed_optimizer,
    check_sentence_lengths,
    machine_memory_bytes,
    refuse_used_checkpoint_dirs,
)
from gradspace.ftgd.config import TrainSettings, check_train_config
from gradspace.ftgd.datamodule import FTGDDataModule, heldout_sentences
from gradspace.ftgd.module import FTGDModule
from gradspace.ftgd.objectives import check_objective
from gradspace.ftgd.report import run_label
from gradspace.ftgd.results import TrainResults
from gradspace.ftgd.stopping import fit_or_stop, last_checkpoint
from gradspace.models.loading import load_model
from gradspace.utils.io import check_output_dir, write_results
from gradspace.utils.memory import return_freed_memory, sparse_tied_embedding_gradient
from gradspace.utils.progress import with_step_progress_bar
from gradspace.utils.run_config import loggable_config
from gradspace.utils.seeding import seed_everything, set_torch_threads
from gradspace.utils.wandb_setup import finish_wandb, loggers_from_config, wandb_logger_of


def run(cfg: DictConfig, base: BaseMeasurement | None = None) -> TrainResults:
    """Fine-tune `cfg.model` on `cfg.task` with `cfg.objective`; return (and on rank 0 write) the results.

    `base`: the untrained model's measurements from an earlier run of the same checkpoint (`BaseMeasurement.of_results`),
    used when this run would measure exactly the same (its key matches) instead of measuring again.
    """
    # Everything that can be checked without data or a model is checked first: a wrong setting is one line at once.
    settings = check_train_config(cfg)
    check_output_dir(cfg.paths.output_dir)
    objective = str(cfg.objective.name)
    check_objective(objective)
    if objective == "lm" and settings.ftgd.mask.active:
        raise GradspaceError("the lm baseline has no gradient differential to mask; use ftgd.mask.kind=none with objective=lm")
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path and not Path(ckpt_path).is_file():
        raise GradspaceError(f"ckpt_path={ckpt_path} is not a file; point it at a .ckpt from a previous run's checkpoints/")
    if ckpt_path:
        check_resumed_optimizer(Path(ckpt_path), settings.optimizer.factory())
    callbacks = build_callbacks(cfg)
    refuse_used_checkpoint_dirs(callbacks[0])
    output_dir = Path(cfg.paths.output_dir)
    cache_dir = Path(cfg.paths.cache_dir).expanduser()
    seed_everything(settings.seed)
    threads_before = torch.get_num_threads()
    set_torch_threads(settings.torch_threads)
    try:
        return _fit_and_measure(cfg, settings, objective, callbacks, ckpt_path, output_dir, cache_dir, base)
    finally:
        finish_wandb()
        torch.set_num_threads(threads_before)
        # Free the finished run's weights and optimizer state before the next job of a sweep or probe (same
        # process) loads its own; the callbacks hold the module through the log methods Lightning gave them.
        del callbacks
        return_freed_memory()


def load_checked(cfg: DictConfig, settings: TrainSettings, cache_dir: Path):
    """(task data, loaded model, held-out sentences), each checked against the settings before any training."""
    # The pairs first: a bad task or data file should fail before minutes of model loading.
    task_data = prepare_task_data(cfg.task, cfg.data, cfg.model, cache_dir, cfg.paths.get("blimp_dir"))
    check_batch_size(settings.ftgd.batch_size, task_data)
    loaded = load_model(cfg.model, cache_dir, device="cpu")
    task_data = without_identical_tokenizations(task_data, loaded.tokenizer)
    check_batch_size(settings.ftgd.batch_size, task_data)  # again: the tokenizer may have left pairs out
    heldout_text = heldout_sentences(settings.heldout, cfg.model, task_data, cache_dir)
    longest = check_sentence_lengths(loaded, task_data, heldout_text, settings.ftgd.max_sentence_tokens)
    vocabulary = max(len(loaded.tokenizer), getattr(loaded.model.config, "vocab_size", 0))  # logits span the larger
    check_pass_memory(settings.ftgd.pairs_per_pass, longest, vocabulary,
                      machine_memory_bytes(str(cfg.trainer.get("accelerator", "auto"))))
    return task_data, loaded, heldout_text


def _fit_and_measure(cfg: DictConfig, settings: TrainSettings, objective: str,
                     callbacks: tuple[list[L.Callback], TransferEvaluation, HeldoutLoss], ckpt_path: str | None,
                     output_dir: Path, cache_dir: Path, base: BaseMeasurement | None) -> TrainResults:
    task_data, loaded, heldout_text = load_checked(cfg, settings, cache_dir)
    datamodule = FTGDDataModule(
        loaded.tokenizer, task_data, heldout_text, objective=objective, batch_size=settings.ftgd.pairs_per_pass, seed=settings.seed,
    )
    module = FTGDModule(loaded.model, objective, settings.optimizer.factory(), settings.ftgd.mask)
    callback_list, transfer, heldout = callbacks
    key = base_key(OmegaConf.to_container(cfg.model, resolve=True), datamodule.eval_pairs, heldout_text, transfer, heldout)
    if base is not None and base.key == key and not ckpt_path:  # a resumed run has its own in the checkpoint
        transfer.before, heldout.before = base.eval_before, base.heldout_before
    trainer: L.Trainer = hydra.utils.instantiate(
        cfg.trainer, callbacks=with_step_progress_bar(callback_list, cfg.trainer, "FTGD steps"),
        logger=loggers_from_config(cfg, default_name=run_label(cfg), tags=[cfg.model.name, cfg.task.name, cfg.objective.name]) or False,
        max_steps=settings.ftgd.max_steps, max_epochs=-1, accumulate_grad_batches=settings.ftgd.passes_per_step,
    )
    start = time.perf_counter()
    # One process on one device: a tied embedding's gradient without its dense buffer (multi-process strategies
    # bucket or flatten gradients themselves and are left as they are).
    single_device = isinstance(trainer.strategy, SingleDeviceStrategy)
    with sparse_tied_embedding_gradient(loaded.model) if single_device else contextlib.nullcontext():
        fit_or_stop(trainer, module, datamodule, ckpt_path, settings.ftgd.max_steps)
    mask_config = settings.ftgd.mask
    results = TrainResults(
        status="ok",
        model={"name": loaded.name, "revision": loaded.revision},
        task=str(cfg.task.name),
        tasks_trained=list(task_data.tasks),
        objective=objective,
        mask={**vars(mask_config), "actual_density": module.mask.density() if mask_config.active else 1.0},
        seed=settings.seed,
        steps=int(trainer.global_step),
        train_pairs=len(task_data.train),
        phenomena=dict(task_data.suite.phenomena),
        base_key=key,
        eval_before=transfer.before,
        eval_after=transfer.after,
        transfer=transfer.transfer(),
        heldout_lm_loss=heldout.summary(),
        config=loggable_config(cfg),
        run={"output_dir": str(output_dir), "checkpoint": last_checkpoint(trainer)},
        # A resumed run trains with this config's optimizer settings; the ones it changed from the checkpoint's.
        resumed_from={"checkpoint": str(ckpt_path), "optimizer_changes": module.optimizer_changes} if ckpt_path else None,
        fit_seconds=time.perf_counter() - start,
    )
    for logger in trainer.loggers:
        logger.log_metrics({"time/fit_seconds": results.fit_seconds}, step=trainer.global_step)
    if trainer.is_global_zero:
        path = write_results(output_dir, results.to_json())
        wandb_logger = wandb_logger_of(trainer.loggers)
        if wandb_logger is not None:
            # Uploaded with the run so that `probe.py source.wandb_group=...` can rebuild the transfer matrix.
            wandb_logger.experiment.save(str(path), base_path=str(output_dir), policy="now")
    return results
