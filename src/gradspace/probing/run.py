"""Similarity probing: a model's linguistic task space at one or more checkpoints, compared with the hypothesis.

For every checkpoint (model × revision) it measures
- the transfer matrix: one FTGD fine-tuning per task (`probing.finetune`), each copy evaluated on every task, or the
  same results read from a `train.py -m` sweep directory or a W&B group (`probing.transfer`);
- gradient similarity with no fine-tuning (`probing.measure`): per task, the gradient of the FTGD objective (the
  gradient differential) and of the LM baseline, compared by cosine and top-k overlap, overall and per module;
and compares each space with same-phenomenon = 1 (Spearman, permutation p-value, within vs across means).
Writes results.json, PNGs and (when a logger is configured) W&B images and tables; prints a summary.

The stages: settings (`probing.config`), plan (`probing.plan`), the suite of each model, each checkpoint
(`probing.checkpoint`), then the results (`probing.results`) and their report (`probing.report`).
"""

from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig

from gradspace.data.suite import TaskData, prepare_task_data
from gradspace.errors import GradspaceError
from gradspace.models.loading import resolve_pretrained_path
from gradspace.probing.checkpoint import probe_checkpoint, quiet_transformers
from gradspace.probing.config import ProbeConfig
from gradspace.probing.granularity import at_granularity
from gradspace.probing.plan import Checkpoint, plan_checkpoints, transfer_records
from gradspace.probing.report import log_to_trackers, make_plots, print_summary
from gradspace.probing.results import ProbeResults
from gradspace.probing.resume import ResumeStore
from gradspace.utils.io import check_output_dir, write_results
from gradspace.utils.run_config import loggable_config, plain_section
from gradspace.utils.seeding import seed_everything, set_torch_threads
from gradspace.utils.termination import Terminated


def suites(probe: ProbeConfig, cfg: DictConfig, checkpoints: list[Checkpoint], cache_dir: Path) -> dict[str, TaskData]:
    """The task data of each model (the synthetic world follows the model's config), read before any long work so
    that a bad task name fails at once."""
    task_data_by_model: dict[str, TaskData] = {}
    for checkpoint in checkpoints:
        name = checkpoint.model_cfg["name"]
        if name in task_data_by_model:
            continue
        task_data = prepare_task_data(cfg.task, cfg.data, checkpoint.model_cfg, cache_dir, cfg.paths.get("blimp_dir"))
        task_data_by_model[name] = at_granularity(task_data, probe.granularity)
        tasks = task_data_by_model[name].tasks
        if len(tasks) < 2:
            raise GradspaceError(f"task '{cfg.task.name}' selects {len(tasks)} task ({', '.join(tasks)}) at "
                                 f"granularity={probe.granularity}; a task space needs at least 2: select a phenomenon "
                                 f"with several paradigms, or task=all")
    return task_data_by_model


def run(cfg: DictConfig) -> ProbeResults:
    """Probe every requested checkpoint; write results.json and plots under `paths.output_dir`; return the results."""
    start = time.perf_counter()
    probe = ProbeConfig.from_config(cfg)
    output_dir = check_output_dir(cfg.paths.output_dir)
    cache_dir = Path(cfg.paths.cache_dir).expanduser()
    seed_everything(probe.seed)
    set_torch_threads(probe.torch_threads)
    read, source = transfer_records(probe.source, (cfg.get("logger") or {}).get("wandb") or {})
    checkpoints = plan_checkpoints(probe, plain_section(cfg.model), read)
    task_data_by_model = suites(probe, cfg, checkpoints, cache_dir)
    # Pretrain a synthetic model that is not cached yet (with its own progress bar) and check every revision exists,
    # before the long loop starts.
    for checkpoint in checkpoints:
        resolve_pretrained_path(checkpoint.model_cfg, cache_dir, progress=probe.progress)
    store = ResumeStore(output_dir, enabled=probe.resume)
    entries = []
    try:
        with quiet_transformers():
            for checkpoint in checkpoints:
                task_data = task_data_by_model[checkpoint.model_cfg["name"]]
                entries.append(probe_checkpoint(probe, cfg, checkpoint, source, cache_dir, output_dir, task_data, store))
    except (Terminated, KeyboardInterrupt) as stop:  # a probe resumes from its store, not from a job's checkpoint
        raise type(stop)(f"; the finished measurements are kept: rerun with hydra.run.dir={output_dir} to resume") from None
    first = task_data_by_model[checkpoints[0].model_cfg["name"]]
    results = ProbeResults.collect(probe.granularity, first.tasks, task_data_by_model.values(), entries,
                                   list(read.problems) if read else [], loggable_config(cfg))
    if probe.plots:
        results.files = make_plots(results, output_dir, probe.gradient.objectives[0])
    results.seconds = round(time.perf_counter() - start, 2)
    results_path = write_results(output_dir, results.to_json())
    wandb_dir = log_to_trackers(cfg, results, results.files)
    # The W&B run directory is named by time and run id, so it is printed rather than kept in the results.
    print_summary(results, {**results.files, **({"wandb": wandb_dir} if wandb_dir else {})}, results_path)
    return results
