import json
from dataclasses import replace

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import train_results
from gradspace.errors import GradspaceError
from gradspace.probing.transfer import (
    assemble_transfer,
    group_by_checkpoint,
    matrix_to_json,
    read_multirun_dir,
    read_wandb_group,
)

pytestmark = pytest.mark.unit

PHENOMENA = {"sva_pp": "agreement", "sva_simple": "agreement", "npi_any": "npi", "refl": "anaphor"}


def record(task: str, revision: str = "main", status: str = "ok", scale: float = 1.0):
    """A results.json of one FTGD fine-tuning: transfer to a task of its own phenomenon is large, else small."""
    transfer = {
        other: {"accuracy": scale * (0.3 if PHENOMENA[other] == PHENOMENA[task] else 0.01), "margin": scale * (2.0 if other == task else 0.1)}
        for other in PHENOMENA
    }
    return train_results(status=status, model={"name": "synth-1m", "revision": revision}, task=task, tasks_trained=[task],
                         phenomena=dict(PHENOMENA), transfer=transfer)


def write_sweep(root, jobs: dict, overrides: list[str] | None = None):
    root.mkdir(parents=True, exist_ok=True)
    for number, content in jobs.items():
        job = root / str(number)
        (job / ".hydra").mkdir(parents=True)
        task = content.task if content else "npi_any"
        OmegaConf.save(OmegaConf.create({"task": {"name": task}, "model": {"name": "synth-1m", "revision": "main"}}), job / ".hydra" / "config.yaml")
        if content is not None:
            (job / "results.json").write_text(json.dumps(content.to_json()))
    if overrides is not None:
        OmegaConf.save(OmegaConf.create({"hydra": {"overrides": {"task": overrides}}}), root / "multirun.yaml")
    return root


def test_assemble_orders_tasks_by_phenomenon_and_fills_cells():
    matrix = assemble_transfer([record(task) for task in PHENOMENA])
    assert matrix.tasks == ["sva_pp", "sva_simple", "refl", "npi_any"]  # agreement, anaphor, npi
    assert matrix.missing_rows == []
    i, j = matrix.tasks.index("sva_pp"), matrix.tasks.index("sva_simple")
    assert matrix.accuracy[i, j] == pytest.approx(0.3)
    assert matrix.accuracy[i, matrix.tasks.index("refl")] == pytest.approx(0.01)
    assert matrix.margin[i, i] == pytest.approx(2.0)


def test_missing_rows_are_nan_and_listed():
    matrix = assemble_transfer([record("sva_pp"), record("refl")])
    assert sorted(matrix.missing_rows) == ["npi_any", "sva_simple"]
    row = matrix.tasks.index("npi_any")
    assert np.isnan(matrix.accuracy[row]).all()
    assert matrix_to_json(matrix.accuracy)[row] == [None] * 4
    json.dumps(matrix.to_dict(), allow_nan=False)


def test_record_training_several_tasks_or_duplicates_are_user_errors():
    several = replace(record("sva_pp"), tasks_trained=["sva_pp", "sva_simple"])
    with pytest.raises(GradspaceError, match="one fine-tuning per task"):
        assemble_transfer([several, record("refl")])
    with pytest.raises(GradspaceError, match="two results fine-tune task 'refl'"):
        assemble_transfer([record("refl"), record("refl"), record("sva_pp")])


def test_fewer_than_two_tasks_is_a_user_error():
    with pytest.raises(GradspaceError, match="at least 2 tasks"):
        assemble_transfer([replace(record("refl"), phenomena={"refl": "anaphor"}, transfer={"refl": {"accuracy": 0.1, "margin": 1}})])


def test_multirun_dir_reports_missing_and_failed_jobs_and_builds_from_the_rest(tmp_path):
    sweep = write_sweep(
        tmp_path / "sweep",
        {0: record("sva_pp"), 1: record("sva_simple"), 2: None, 3: record("refl", status="failed")},
        overrides=["task=paradigm", "task.name=sva_pp,sva_simple,npi_any,refl,extra"],
    )
    (sweep / "4").mkdir()  # a job directory Hydra made before the job crashed, without its config
    read = read_multirun_dir(sweep)
    assert [r.task for r in read.records] == ["sva_pp", "sva_simple"]
    assert read.problems == [
        "job 2 (task npi_any, synth-1m@main): no results.json (failed or unfinished)",
        "job 3 (task refl, synth-1m@main): status='failed'",
        "job 4: no results.json (failed or unfinished)",
    ]
    matrix = assemble_transfer(read.records)
    assert sorted(matrix.missing_rows) == ["npi_any", "refl"]


def test_multirun_dir_counts_jobs_that_never_started(tmp_path):
    sweep = write_sweep(tmp_path / "s", {0: record("sva_pp"), 2: record("refl")}, overrides=["task.name=a,b,c,d"])
    problems = read_multirun_dir(sweep).problems
    assert problems == ["job 1: no job directory (never started)", "job 3: no job directory (never started)"]


def test_in_process_and_directory_records_give_the_same_matrix(tmp_path):
    records = [record(task) for task in PHENOMENA]
    sweep = write_sweep(tmp_path / "s", dict(enumerate(records)))
    from_dir = assemble_transfer(read_multirun_dir(sweep).records)
    direct = assemble_transfer(records)
    assert np.array_equal(from_dir.accuracy, direct.accuracy) and np.array_equal(from_dir.margin, direct.margin)


def test_records_group_by_checkpoint():
    grouped = group_by_checkpoint([record("refl", "step100"), record("refl", "main"), record("sva_pp", "main")])
    assert {key: len(items) for key, items in grouped.items()} == {
        ("synth-1m", "step100", "bounded"): 1, ("synth-1m", "main", "bounded"): 2}


def test_bad_multirun_dirs(tmp_path):
    with pytest.raises(GradspaceError, match="no such directory"):
        read_multirun_dir(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GradspaceError, match="no job directories"):
        read_multirun_dir(tmp_path / "empty")
    failed = write_sweep(tmp_path / "failed", {0: None})
    with pytest.raises(GradspaceError, match="none of its 1 jobs finished"):
        read_multirun_dir(failed)


def test_wandb_group_offline_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", "/nonexistent")
    with pytest.raises(GradspaceError, match="online mode"):
        read_wandb_group("my-sweep", project="gradspace", mode="offline")
    with pytest.raises(GradspaceError, match="online mode"):
        read_wandb_group("my-sweep", project="gradspace", mode="auto")
