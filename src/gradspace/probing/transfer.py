"""The transfer matrix: row = the task a copy of the model was fine-tuned on, column = a task it was evaluated on,
cell = eval after − eval before (accuracy and margin).

The rows come from FTGD results records (the `results.json` that `gradspace.ftgd.run.run` writes), wherever they
were made: in this process, in the jobs of a `train.py` multirun directory, or in the runs of a W&B group. All three
go through `assemble_transfer`, so the numbers are the same whichever way they were collected.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from gradspace.errors import GradspaceError, job_failure
from gradspace.ftgd.results import TrainResults
from gradspace.utils.io import RESULTS_FILE
from gradspace.utils.wandb_setup import resolve_wandb_mode


@dataclass
class TransferMatrix:
    tasks: list[str]  # rows and columns, ordered by phenomenon
    phenomena: dict[str, str]
    accuracy: np.ndarray  # [trained, evaluated]; NaN where the job is missing or the task was not evaluated
    margin: np.ndarray
    missing_rows: list[str] = field(default_factory=list)  # tasks whose fine-tuning result is missing

    def to_dict(self) -> dict:
        return {
            "tasks": list(self.tasks),
            "accuracy": matrix_to_json(self.accuracy),
            "margin": matrix_to_json(self.margin),
            "missing_rows": list(self.missing_rows),
        }


def matrix_to_json(matrix: np.ndarray) -> list[list[float | None]]:
    """Nested lists with None for missing cells (JSON has no NaN)."""
    return [[None if not math.isfinite(value) else float(value) for value in row] for row in np.asarray(matrix, dtype=float)]


def ordered_tasks(phenomena: Mapping[str, str]) -> list[str]:
    """The suite order (phenomenon, then name), so related tasks sit together."""
    return sorted(phenomena, key=lambda task: (phenomena[task], task))


def trained_task(record: TrainResults) -> str:
    trained = list(record.tasks_trained)
    if len(trained) != 1:
        raise GradspaceError(
            f"a results record of task '{record.task}' trained {len(trained)} tasks ({', '.join(trained)}); "
            f"a transfer row needs one fine-tuning per task: sweep task=paradigm task.name=<each task>"
        )
    return trained[0]


def assemble_transfer(records: Iterable[TrainResults], tasks: list[str] | None = None,
                      phenomena: Mapping[str, str] | None = None) -> TransferMatrix:
    """One matrix from finished FTGD results records of one model checkpoint and objective.

    `tasks` (default: every task the records evaluated) fixes the rows and columns; a task without a record gets a
    row of NaN and is listed in `missing_rows`.
    """
    records = list(records)
    known = dict(phenomena or {})
    for record in records:
        known.update(record.phenomena)
    tasks = list(tasks) if tasks is not None else ordered_tasks(known)
    if len(tasks) < 2:
        raise GradspaceError(f"a transfer matrix needs at least 2 tasks, found {len(tasks)}; fine-tune on more tasks")
    index = {task: i for i, task in enumerate(tasks)}
    accuracy = np.full((len(tasks), len(tasks)), np.nan)
    margin = np.full_like(accuracy, np.nan)
    seen: dict[str, str] = {}
    for record in records:
        row_task = trained_task(record)
        if row_task not in index:
            continue
        if row_task in seen:
            raise GradspaceError(
                f"two results fine-tune task '{row_task}' on the same checkpoint ({seen[row_task]} and {record.source or '?'}); "
                f"keep one job per task (or sweep the extra setting into separate directories)"
            )
        seen[row_task] = record.source or "?"
        for column_task, delta in record.transfer.items():
            if column_task in index:
                accuracy[index[row_task], index[column_task]] = _number(delta.get("accuracy"))
                margin[index[row_task], index[column_task]] = _number(delta.get("margin"))
    missing = [task for task in tasks if task not in seen]
    return TransferMatrix(tasks, {task: known.get(task, task) for task in tasks}, accuracy, margin, missing)


def _number(value) -> float:
    return float(value) if value is not None else math.nan


def checkpoint_key(record: TrainResults) -> tuple[str, str, str]:
    """(model, revision, objective): the records of one transfer matrix."""
    return str(record.model.get("name")), str(record.model.get("revision")), str(record.objective)


@dataclass
class SweepRecords:
    records: list[TrainResults]  # finished results, each with its `source`
    problems: list[str]  # one line per missing or failed job


def _job_description(job_dir: Path) -> str:
    """`job 3 (task sva_pp, synth-1m@main)` from Hydra's saved job config, when it is there."""
    description = f"job {job_dir.name}"
    config_path = job_dir / ".hydra" / "config.yaml"
    if config_path.is_file():
        try:
            config = OmegaConf.load(config_path)
            task = OmegaConf.select(config, "task.name", default=None)
            model = OmegaConf.select(config, "model.name", default=None)
            revision = OmegaConf.select(config, "model.revision", default=None)
            description += f" (task {task}, {model}@{revision})"
        except Exception:  # a damaged config only costs the description its details
            pass
    return description


def expected_job_count(sweep_dir: Path) -> int | None:
    """Number of jobs the sweep launched, from the overrides Hydra saved in `multirun.yaml` (None if unknown)."""
    saved = sweep_dir / "multirun.yaml"
    if not saved.is_file():
        return None
    try:
        overrides = list(OmegaConf.select(OmegaConf.load(saved), "hydra.overrides.task", default=[]) or [])
        count = 1
        for override in OverridesParser.create().parse_overrides(overrides):
            if override.is_sweep_override():
                count *= len(list(override.sweep_string_iterator()))
        return count
    except Exception:  # an unusual sweeper or override syntax: fall back to the job directories present
        return None


def read_multirun_dir(path: str | Path) -> SweepRecords:
    """Finished results of every job of a `train.py -m` sweep directory, and a line for each job that is missing
    (no directory, no results.json) or failed (status != ok, unreadable)."""
    sweep_dir = Path(path).expanduser()
    if not sweep_dir.is_dir():
        raise GradspaceError(f"{sweep_dir}: no such directory; give source.multirun_dir=<a train.py -m sweep directory>")
    job_dirs = sorted((child for child in sweep_dir.iterdir() if child.is_dir() and child.name.isdigit()), key=lambda p: int(p.name))
    if not job_dirs:
        raise GradspaceError(
            f"{sweep_dir} has no job directories (0/, 1/, ...); point source.multirun_dir at the sweep directory of `train.py -m`"
        )
    records, problems = [], []
    numbers = {int(job.name) for job in job_dirs}
    expected = expected_job_count(sweep_dir)
    last = max(max(numbers) + 1, expected or 0)
    problems.extend(f"job {number}: no job directory (never started)" for number in range(last) if number not in numbers)
    for job_dir in job_dirs:
        results_path = job_dir / RESULTS_FILE
        if not results_path.is_file():
            failure = job_failure(job_dir)
            problems.append(f"{_job_description(job_dir)}: " + (f"failed ({failure})" if failure else f"no {RESULTS_FILE} (failed or unfinished)"))
            continue
        record = finished_record(results_path, _job_description(job_dir), problems)
        if record is not None:
            records.append(record.with_source(f"job {job_dir.name}"))
    if not records:
        raise GradspaceError(f"{sweep_dir}: none of its {len(job_dirs)} jobs finished ({problems[0]}); rerun the sweep")
    return SweepRecords(records, problems)


def finished_record(path: Path, description: str, problems: list[str]) -> TrainResults | None:
    """The results of a finished job, or None with the reason added to `problems` (unreadable, or not status ok)."""
    try:
        record = TrainResults.read(path, description)
    except GradspaceError as err:
        problems.append(str(err))
        return None
    if record.status != "ok":
        problems.append(f"{description}: status={record.status!r}")
        return None
    return record


def read_wandb_group(group: str, project: str, entity: str | None = None, mode: str = "auto") -> SweepRecords:
    """Finished results of the runs of a W&B group, from the `results.json` each run uploaded. Needs W&B online."""
    if resolve_wandb_mode(mode) != "online":
        raise GradspaceError(
            f"source.wandb_group={group} reads runs from the W&B server, which needs online mode and credentials; "
            f"run `wandb login`, or build from a sweep directory with source.multirun_dir=<path>"
        )
    import wandb  # not at the top: importing wandb takes seconds, and only this online path needs it

    api = wandb.Api()
    path = f"{entity}/{project}" if entity else project
    try:
        runs = list(api.runs(path, filters={"group": group}))
    except Exception as err:  # the public API raises several error types for a bad path or network
        raise GradspaceError(f"could not list W&B runs of {path} group {group} ({type(err).__name__}: {err}); check project/entity") from None
    if not runs:
        raise GradspaceError(f"W&B group '{group}' in {path} has no runs; check the group name (logger.wandb.group of the sweep)")
    records, problems = [], []
    with tempfile.TemporaryDirectory() as scratch:
        for run in runs:
            description = f"W&B run {run.name} ({run.id})"
            if run.state != "finished":
                problems.append(f"{description}: state={run.state}")
                continue
            try:
                downloaded = run.file(RESULTS_FILE).download(root=str(Path(scratch) / run.id), replace=True)
            except Exception as err:  # the public API raises several error types for a missing file
                problems.append(f"{description}: no {RESULTS_FILE} uploaded ({type(err).__name__})")
                continue
            record = finished_record(Path(downloaded.name), description, problems)
            if record is not None:
                records.append(record)
    if not records:
        raise GradspaceError(f"no run of W&B group '{group}' has a finished results.json ({problems[0]})")
    return SweepRecords(records, problems)


def group_by_checkpoint(records: Iterable[TrainResults]) -> dict[tuple[str, str, str], list[TrainResults]]:
    grouped: dict[tuple[str, str, str], list[TrainResults]] = {}
    for record in records:
        grouped.setdefault(checkpoint_key(record), []).append(record)
    return grouped
