"""What one FTGD run measured: written as its `results.json`, and read back (by probe.py, from a sweep directory or a
W&B group, or a probe's own finished jobs) only through `TrainResults`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from gradspace.utils.results_file import checked_fields, read_json

# Bump when a field is added, removed or changes meaning; a file of another version is refused, not misread.
SCHEMA_VERSION = 1
# Timings go to timings.json beside results.json (`write_results`), so a file read back has none.
TIMING_FIELDS = ("fit_seconds",)
RERUN = "rerun that train.py job"
Scores = dict[str, dict[str, float]]  # task -> {accuracy, margin[, pairs]}


@dataclass
class TrainResults:
    status: str
    model: dict[str, str]  # name, revision
    task: str  # task.name as configured
    tasks_trained: list[str]  # the tasks it selected
    objective: str
    mask: dict[str, Any]  # ftgd.mask and the density reached
    seed: int
    steps: int
    train_pairs: int
    phenomena: dict[str, str]  # task -> phenomenon, for every task of the suite
    base_key: str  # what the "before" measurements depend on (`ftgd.callbacks.base_key`)
    eval_before: Scores
    eval_after: Scores
    transfer: dict[str, dict[str, float]]  # task -> after - before of accuracy and margin
    heldout_lm_loss: dict[str, float]  # before, after, delta
    config: dict[str, Any]  # the resolved config, secrets removed
    run: dict[str, Any]  # output_dir, checkpoint
    resumed_from: dict[str, Any] | None  # checkpoint and the optimizer settings changed on resuming
    fit_seconds: float | None
    schema_version: int = SCHEMA_VERSION
    # Where the record was read from (a job directory, a W&B run), for messages; not written.
    source: str = field(default="", compare=False)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["source"]
        return data

    @classmethod
    def from_json(cls, data: Any, source: str) -> "TrainResults":
        """A results.json as read; one line naming `source` and the fix when it is no FTGD results file of this version."""
        return cls(**checked_fields(cls, data, SCHEMA_VERSION, source, RERUN, optional=TIMING_FIELDS,
                                    unwritten=("source",)), source=source)

    @classmethod
    def read(cls, path: Path, source: str) -> "TrainResults":
        return cls.from_json(read_json(path, source, RERUN), source)

    def with_source(self, source: str) -> "TrainResults":
        return replace(self, source=source)
