"""What one probe measured: written as its `results.json` and read back only through `ProbeResults`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

from gradspace.data.suite import TaskData
from gradspace.probing.spaces import summary_rows, trends
from gradspace.utils.results_file import checked_fields, read_json

# Bump when a field is added, removed or changes meaning; a file of another version is refused, not misread.
SCHEMA_VERSION = 1
RERUN = "rerun that probe.py"


@dataclass
class ProbeResults:
    status: str
    granularity: str
    tasks: list[str]  # of the first model; rows and columns of its spaces
    phenomena: dict[str, str]  # task -> the group of the hypothesis, over every model
    checkpoints: list[dict[str, Any]]  # per checkpoint: evaluation, spaces, gradient and transfer details
    problems: list[str]  # one line per missing or failed job of a sweep the transfer rows were read from
    config: dict[str, Any]  # the resolved config, secrets removed
    summary: list[dict[str, Any]]  # one row per checkpoint and space (`spaces.summary_rows`)
    trends: list[dict[str, Any]]  # per model and space, over its checkpoints
    files: dict[str, str]  # plots, by name
    seconds: float | None  # written to timings.json
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def collect(cls, granularity: str, tasks: list[str], task_data: Iterable[TaskData], checkpoints: list[dict],
                problems: list[str], config: dict) -> "ProbeResults":
        phenomena = {task: group for data in task_data for task, group in data.suite.phenomena.items() if task in data.tasks}
        rows = summary_rows(checkpoints)
        return cls(status="ok", granularity=granularity, tasks=tasks, phenomena=phenomena, checkpoints=checkpoints,
                   problems=problems, config=config, summary=rows, trends=trends(rows), files={}, seconds=None)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def read(cls, path: Path) -> "ProbeResults":
        source = str(path)
        return cls(**checked_fields(cls, read_json(path, source, RERUN), SCHEMA_VERSION, source, RERUN,
                                    optional=("seconds",)))
