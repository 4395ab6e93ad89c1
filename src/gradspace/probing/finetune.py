"""The transfer rows fine-tuned in this process: one FTGD job per task (train.py's `run` on its composed config), each
writing the results.json a sweep job would write, and each reused when a killed probe is rerun in its directory."""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from gradspace.errors import GradspaceError
from gradspace.ftgd import run as ftgd_run
from gradspace.ftgd.callbacks import BaseMeasurement
from gradspace.ftgd.results import TrainResults
from gradspace.probing.config import ProbeConfig
from gradspace.probing.measure import reused, stage_bar
from gradspace.probing.resume import ResumeStore, safe_name
from gradspace.probing.transfer import trained_task
from gradspace.utils.cache import fingerprint
from gradspace.utils.hydra_compose import compose_config
from gradspace.utils.io import RESULTS_FILE
from gradspace.utils.run_config import loggable_config, plain_section

# Written beside a fine-tuning job's results.json once it finished: the fingerprint of its config, for resuming.
JOB_MARKER = "probe_job.json"


@contextlib.contextmanager
def quiet_lightning():
    """The per-task trainers' banners and data-loader hints would bury the progress bar."""
    loggers = [logging.getLogger(name) for name in ("lightning", "lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def train_config(probe: ProbeConfig, data_cfg: DictConfig, paths_cfg: DictConfig, model_cfg: dict, task: str,
                 output_dir: Path, objective: str | None = None, own_task_only: bool = False) -> DictConfig:
    """The `train.py` config of one transfer row: this task alone, no tracker, no checkpoints.

    The data settings are the probe's (the same split as the gradients), with `data.*` items of
    `transfer.train_overrides` applied on top. `own_task_only`: evaluate the tuned task alone (a side-effect copy).
    """
    extra = list(probe.transfer.train_overrides)
    groups = ["task=paradigm", f"objective={objective or probe.transfer.objective}", "logger=none",
              "callbacks=no_checkpoints"]
    train_cfg = compose_config("train", [*groups, *extra])
    data_overrides = OmegaConf.from_dotlist([item for item in extra if item.startswith("data.")]).get("data") or {}
    with open_dict(train_cfg):
        train_cfg.model = OmegaConf.create(model_cfg)
        train_cfg.task.name = task
        train_cfg.seed = probe.seed
        train_cfg.trainer.enable_progress_bar = False
        train_cfg.trainer.enable_model_summary = False
        train_cfg.data = OmegaConf.merge(plain_section(data_cfg), data_overrides)
        if own_task_only:
            train_cfg.data.eval_all_tasks = False
        train_cfg.paths = OmegaConf.create({**plain_section(paths_cfg), "output_dir": str(output_dir)})
    return train_cfg


def finetune_rows(probe: ProbeConfig, cfg: DictConfig, checkpoint, tasks: list[str], output_dir: Path,
                  store: ResumeStore, objective: str, own_task_only: bool = False) -> list[TrainResults]:
    """One FTGD job per task, in this process; a job whose results.json is already there with the same config (a
    killed probe rerun in its directory) is not run again."""
    records, base = [], None
    folder = "transfer" if not own_task_only else f"side_effects/{objective}"
    description = f"{checkpoint.name} fine-tune {objective}" + (" (own task only)" if own_task_only else "")
    with stage_bar(probe.progress, description, len(tasks)) as bar:
        for task in tasks:
            job_dir = output_dir / folder / safe_name(checkpoint.name) / safe_name(task)
            train_cfg = train_config(probe, cfg.data, cfg.paths, checkpoint.model_cfg, task, job_dir, objective,
                                     own_task_only)
            record = finished_job(store, job_dir, train_cfg)
            if record is not None:
                reused(bar, task)
            else:
                bar.set_postfix_str(task, refresh=False)
                with quiet_lightning():
                    record = ftgd_run.run(train_cfg, base)
                store.save_json(str(job_dir.relative_to(store.root) / JOB_MARKER), job_fingerprint(train_cfg),
                                {"task": task})
                bar.update(1)
            base = base or BaseMeasurement.of_results(record)
            records.append(record.with_source(str(job_dir / RESULTS_FILE)))
    return records


def finished_job(store: ResumeStore, job_dir: Path, train_cfg: DictConfig) -> TrainResults | None:
    """The results of a fine-tuning job that finished in `job_dir` with this very config, else None."""
    marker = store.load_json(str(job_dir.relative_to(store.root) / JOB_MARKER), job_fingerprint(train_cfg))
    path = job_dir / RESULTS_FILE
    if marker is None or not path.is_file():
        return None
    try:
        record = TrainResults.read(path, str(path))
    except GradspaceError:  # a file of an older version or a damaged one: the job runs again
        return None
    return record if record.status == "ok" else None


def job_fingerprint(train_cfg: DictConfig) -> str:
    return fingerprint(loggable_config(train_cfg))


def copy_side_effects(records: list[TrainResults]) -> list[dict]:
    """Per fine-tuned copy: its held-out LM-loss change and the accuracy and margin change on its own task."""
    copies = []
    for record in records:
        task = trained_task(record)
        before, after = record.eval_before.get(task), record.eval_after.get(task)
        own = None if before is None or after is None else {
            f"{key}_{when}": value for key in ("accuracy", "margin")
            for when, value in (("before", before[key]), ("after", after[key]), ("delta", after[key] - before[key]))}
        copies.append({"task": task, "objective": record.objective, "steps": record.steps,
                       "heldout_lm_loss": record.heldout_lm_loss, "own_task": own})
    return copies
