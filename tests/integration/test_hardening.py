"""Issue 32's hostile-but-realistic cases, each through the entry point and Hydra as a user types it: size settings
bounded before a model loads, environment secrets kept out of every file and output, refused reruns that change
nothing, one run per directory, pairs that tokenize alike, probe job directories, BOM files and sweep launch lines."""

import fcntl
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
WANDB_SECRET = "wandb-secret-9f3e2a7c41"
HF_SECRET = "hf_secretToken5b7d9e"


def tiny_overrides(suite: Path, *extra: str) -> list[str]:
    return ["model=local", f"model.path={suite / 'model'}", "data.source=jsonl", f"data.path={suite / 'suite'}",
            "task=paradigm", "task.name=sva", "logger=none", f"paths.cache_dir={suite / 'cache'}", "ftgd.max_steps=2",
            "ftgd.batch_size=4", "torch_threads=1", "+trainer.enable_progress_bar=false",
            "+trainer.enable_model_summary=false", *extra]


def cli(script: str, *args: str, cwd: Path, env: dict | None = None, memory_limit: int | None = None,
        background: bool = False):
    base = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    base.pop("WANDB_API_KEY", None)
    # An unbounded batch without the fix would take the machine's memory; under the limit it fails in seconds.
    limit = (lambda: resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))) if memory_limit else None
    command = [sys.executable, str(ROOT / script), *args]
    if background:
        return subprocess.Popen(command, cwd=cwd, env={**base, **(env or {})}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=cwd, env={**base, **(env or {})}, capture_output=True, text=True, timeout=300,
                          preexec_fn=limit)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def assert_one_line_exit_2(proc, expected: str) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], proc.stderr[-3000:]
    return lines[0]


# Item 1: a size setting beyond the data is refused before any model loads.
def test_a_batch_larger_than_the_task_is_refused_before_the_model_loads(tiny_suite_dir, tmp_path):
    run_dir = tmp_path / "run"
    proc = cli("train.py", *tiny_overrides(tiny_suite_dir), "ftgd.batch_size=1000000000", f"hydra.run.dir={run_dir}",
               cwd=tmp_path, memory_limit=3 * 2**30)
    line = assert_one_line_exit_2(proc, "ftgd.batch_size=1000000000 is more than the ")
    assert line.endswith("training pairs of task sva; set ftgd.batch_size=<integer <= 55>"), line
    assert "Loading weights" not in proc.stdout + proc.stderr
    assert not (run_dir / "results.json").exists() and not (run_dir / ".hydra").exists()


# Item 2: secrets of the environment, interpolated or pasted, reach no file, W&B record or output of the run.
def test_environment_secrets_reach_no_file_and_no_output(tiny_suite_dir, tmp_path):
    run_dir = tmp_path / "run"
    args = [o for o in tiny_overrides(tiny_suite_dir, "callbacks=no_checkpoints") if o != "logger=none"]
    proc = cli("train.py", *args, "+x=${oc.env:WANDB_API_KEY}", "+note=${oc.env:HF_TOKEN}", "tags=[${oc.env:HF_TOKEN}]",
               f"+pasted=prefix-{HF_SECRET}", f"hydra.run.dir={run_dir}", cwd=tmp_path,
               env={"WANDB_API_KEY": WANDB_SECRET, "HF_TOKEN": HF_SECRET})
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = [path for path in run_dir.rglob("*") if path.is_file()]
    assert any(path.suffix == ".wandb" for path in files) and any(path.name == "debug.log" for path in files)
    grep = subprocess.run(["grep", "-rl", "-e", WANDB_SECRET, "-e", HF_SECRET, str(run_dir)], capture_output=True, text=True)
    assert grep.returncode == 1 and grep.stdout == "", f"secret found in: {grep.stdout}"
    assert WANDB_SECRET not in proc.stdout + proc.stderr and HF_SECRET not in proc.stdout + proc.stderr
    config = json.loads((run_dir / "results.json").read_text())["config"]
    assert (config["x"], config["note"], config["tags"], config["pasted"]) == ("<redacted>", "<redacted>", ["<redacted>"], "prefix-<redacted>")


# Item 4: a refused rerun leaves the saved configs of the earlier run as they were.
def test_a_refused_rerun_leaves_the_saved_configs_as_they_were(tiny_suite_dir, tmp_path):
    run_dir = tmp_path / "run"
    assert cli("train.py", *tiny_overrides(tiny_suite_dir), f"hydra.run.dir={run_dir}", cwd=tmp_path).returncode == 0
    saved = {path.name: path.read_bytes() for path in (run_dir / ".hydra").iterdir()}
    assert sorted(saved) == ["config.yaml", "hydra.yaml", "overrides.yaml"]
    proc = cli("train.py", *tiny_overrides(tiny_suite_dir), "ftgd.max_steps=3", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert_one_line_exit_2(proc, "already holds the checkpoints of an earlier run, which this run would mix with its own; nothing was changed")
    assert {path.name: path.read_bytes() for path in (run_dir / ".hydra").iterdir()} == saved


def test_a_run_refused_for_bad_input_leaves_no_saved_configs(tiny_suite_dir, tmp_path):
    run_dir = tmp_path / "run"
    proc = cli("train.py", *tiny_overrides(tiny_suite_dir), "optimizer.lr=-1", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert_one_line_exit_2(proc, "optimizer.lr=-1 must be positive")
    assert not (run_dir / ".hydra").exists() and not (run_dir / "results.json").exists()


# Item 6: one run at a time in a run directory.
def test_a_run_directory_in_use_is_refused(tiny_suite_dir, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with open(run_dir / ".gradspace.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.write("4242\n")
        lock.flush()
        proc = cli("train.py", *tiny_overrides(tiny_suite_dir), f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert_one_line_exit_2(proc, f"error: {run_dir} is in use by another run (process 4242); nothing was changed")
    assert sorted(path.name for path in run_dir.iterdir()) == [".gradspace.lock", "train.log"]


def test_two_runs_started_together_in_one_directory_one_is_refused(tiny_suite_dir, tmp_path):
    run_dir = tmp_path / "run"
    runs = [cli("train.py", *tiny_overrides(tiny_suite_dir), f"hydra.run.dir={run_dir}", cwd=tmp_path, background=True)
            for _ in range(2)]
    outputs = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    assert sorted(code for code, _ in outputs) == [0, 2], outputs
    refused = next(stderr for code, stderr in outputs if code == 2)
    assert len(refused.strip().splitlines()) == 1 and "nothing was changed" in refused
    assert sorted(path.name for path in (run_dir / "checkpoints").iterdir()) == ["last.ckpt", "step2.ckpt"]
    for run in runs:
        run.stdout.close()
        run.stderr.close()
