"""Everything a probe measures at one checkpoint: its evaluation, its gradient spaces and its transfer matrix."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from transformers.utils import logging as hf_logging

from gradspace.data.suite import TaskData, without_identical_tokenizations
from gradspace.models.loading import load_model, revision_step
from gradspace.probing.config import ProbeConfig
from gradspace.probing.finetune import copy_side_effects, finetune_rows
from gradspace.probing.granularity import phenomenon_records
from gradspace.probing.measure import gradient_spaces, measure_evaluation
from gradspace.probing.plan import Checkpoint
from gradspace.probing.resume import ResumeStore, safe_name
from gradspace.probing.spaces import space_entry
from gradspace.probing.transfer import assemble_transfer, trained_task
from gradspace.utils.memory import return_freed_memory


@contextlib.contextmanager
def quiet_transformers():
    """No per-load "Loading weights" bars under the probe's own progress bar."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def probe_checkpoint(probe: ProbeConfig, cfg: DictConfig, checkpoint: Checkpoint, source: str, cache_dir: Path,
                     output_dir: Path, task_data: TaskData, store: ResumeStore) -> dict:
    """The checkpoint's entry of results.json (`checkpoints[]`)."""
    start = time.perf_counter()
    where = safe_name(checkpoint.name)
    loaded = load_model(checkpoint.model_cfg, cache_dir, device=probe.device, progress=probe.progress)
    task_data = without_identical_tokenizations(task_data, loaded.tokenizer)
    tasks = task_data.tasks
    evaluation = measure_evaluation(loaded, checkpoint.model_cfg, [p for p in task_data.eval_all if p.task in set(tasks)],
                                    store, where)
    spaces, gradient_info = gradient_spaces(probe, loaded, checkpoint.model_cfg, task_data, store, where)
    step = revision_step(checkpoint.model_cfg, loaded.path)
    del loaded
    return_freed_memory()  # the model's and the gradient sets' pages, before the copies or the next model load theirs
    transfer_info: dict[str, Any] = {"source": source}
    if source != "none":
        transfer_spaces, transfer_info = transfer_matrix(probe, cfg, checkpoint, source, output_dir, task_data, store)
        spaces.update(transfer_spaces)
    return {"model": checkpoint.model_cfg["name"], "revision": checkpoint.model_cfg["revision"], "step": step,
            "checkpoint": checkpoint.name, "tasks": list(tasks), "evaluation": evaluation, "spaces": spaces,
            "gradient": gradient_info, "transfer": transfer_info, "seconds": round(time.perf_counter() - start, 2)}


def transfer_matrix(probe: ProbeConfig, cfg: DictConfig, checkpoint: Checkpoint, source: str, output_dir: Path,
                    task_data: TaskData, store: ResumeStore) -> tuple[dict, dict]:
    """The transfer spaces (accuracy, margin) and what results.json says of their rows and copies."""
    start = time.perf_counter()
    tasks, phenomena = task_data.tasks, task_data.suite.phenomena
    at_phenomena = probe.granularity == "phenomenon"
    records = checkpoint.records
    if records is None:
        records = finetune_rows(probe, cfg, checkpoint, tasks, output_dir, store, probe.transfer.objective)
    if at_phenomena:
        records = phenomenon_records(records, phenomena)
    matrix = assemble_transfer(records, tasks=tasks, phenomena=phenomena)
    n_permutations, seed = probe.hypothesis.n_permutations, probe.seed
    spaces = {"transfer_accuracy": space_entry(matrix.accuracy, tasks, phenomena, False, n_permutations, seed),
              "transfer_margin": space_entry(matrix.margin, tasks, phenomena, False, n_permutations, seed)}
    info = {"source": source, "missing_rows": matrix.missing_rows, "results_files": [r.source for r in records],
            "heldout_lm_loss_delta": {trained_task(r): r.heldout_lm_loss.get("delta") for r in records},
            "copies": copy_side_effects(records), "seconds": round(time.perf_counter() - start, 2)}
    if source == "inprocess":
        for objective in probe.transfer.side_effect_objectives:
            side = finetune_rows(probe, cfg, checkpoint, tasks, output_dir, store, objective, own_task_only=True)
            info["copies"].extend(copy_side_effects(phenomenon_records(side, phenomena) if at_phenomena else side))
    return spaces, info
