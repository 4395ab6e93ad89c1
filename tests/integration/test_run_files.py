"""What a run leaves on disk: a writable run directory checked first, no reuse of another run's checkpoints,
results that do not depend on where the run lived, no secrets in any file, and sweeps that survive a bad job."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gradspace.errors import GradspaceError

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SECRETS = ("SECRET-TOKEN-4242", "SECRET-KEY-4343")


def tiny_overrides(suite: Path, *extra: str) -> list[str]:
    return ["model=local", f"model.path={suite / 'model'}", "data.source=jsonl", f"data.path={suite / 'suite'}",
            "task=paradigm", "task.name=sva", "logger=none", f"paths.cache_dir={suite / 'cache'}", "ftgd.max_steps=2",
            "ftgd.batch_size=4", "torch_threads=1", "+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false", *extra]


def train_cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    base.pop("WANDB_API_KEY", None)
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=240)


def run_in_process(suite: Path, out: Path, *extra: str):
    from hydra import compose, initialize_config_dir

    from gradspace.ftgd.run import run

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[*tiny_overrides(suite, *extra), f"paths.output_dir={out}"])
    return run(cfg)


def test_results_are_byte_identical_across_run_directories(tiny_suite_dir, tmp_path):
    first = run_in_process(tiny_suite_dir, tmp_path / "a")
    run_in_process(tiny_suite_dir, tmp_path / "elsewhere" / "b")
    text = (tmp_path / "a" / "results.json").read_text()
    assert text == (tmp_path / "elsewhere" / "b" / "results.json").read_text()
    saved = json.loads(text)
    # Paths inside the run directory are written relative to it; the returned results keep them absolute.
    assert saved["run"] == {"output_dir": ".", "checkpoint": "checkpoints/last.ckpt"}
    assert saved["config"]["paths"]["output_dir"] == "." and saved["config"]["trainer"]["default_root_dir"] == "."
    assert str(tmp_path) not in text and first.run["output_dir"] == str(tmp_path / "a")


def test_rerun_into_a_directory_with_checkpoints_is_refused_and_changes_nothing(tiny_suite_dir, tmp_path):
    out = tmp_path / "run"
    run_in_process(tiny_suite_dir, out)
    before = {path.name: (path.is_symlink(), path.stat().st_mtime_ns) for path in (out / "checkpoints").iterdir()}
    results = (out / "results.json").read_text()
    with pytest.raises(GradspaceError, match=r"checkpoints already holds the checkpoints of an earlier run.*run in a new directory"):
        run_in_process(tiny_suite_dir, out, "ftgd.max_steps=3")
    assert {path.name: (path.is_symlink(), path.stat().st_mtime_ns) for path in (out / "checkpoints").iterdir()} == before
    assert sorted(before) == ["last.ckpt", "step2.ckpt"] and (out / "results.json").read_text() == results


def test_no_secret_reaches_any_file_of_the_run_directory(tiny_suite_dir, tmp_path):
    out = tmp_path / "run"
    args = [o for o in tiny_overrides(tiny_suite_dir, "callbacks=no_checkpoints") if o != "logger=none"]
    proc = train_cli(*args, f"+my_token={SECRETS[0]}", f"+logger.wandb.api_key={SECRETS[1]}", f"hydra.run.dir={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = [path for path in out.rglob("*") if path.is_file()]
    assert any(path.suffix == ".wandb" for path in files) and (out / ".hydra" / "config.yaml").is_file()
    grep = subprocess.run(["grep", "-rl", "-e", SECRETS[0], "-e", SECRETS[1], str(out)], capture_output=True, text=True)
    assert grep.returncode == 1 and grep.stdout == "", f"secret found in: {grep.stdout}"
    # The saved configs are still complete, with the secret keys redacted.
    assert "+my_token=<redacted>" in (out / ".hydra" / "overrides.yaml").read_text()
    assert "api_key: <redacted>" in (out / ".hydra" / "config.yaml").read_text()
    assert "task.name=sva" in (out / ".hydra" / "hydra.yaml").read_text()


def test_unwritable_run_directory_is_one_line_before_anything_starts(tiny_suite_dir, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    immutable = False
    if os.access(locked, os.W_OK) and shutil.which("chattr"):  # root ignores permissions, not the immutable flag
        immutable = subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode == 0
    if os.access(locked, os.W_OK):
        pytest.skip("cannot make a directory read-only here")
    try:
        proc = train_cli(*tiny_overrides(tiny_suite_dir), f"hydra.run.dir={locked / 'run'}", cwd=tmp_path)
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(locked)], check=True)
        locked.chmod(0o755)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    assert lines[0].startswith(f"error: cannot write to {locked / 'run'} (") and "hydra.run.dir=<dir>" in lines[0]
    assert list(locked.iterdir()) == []


def test_sweep_job_that_does_not_compose_is_recorded_and_the_others_run(tiny_suite_dir, tmp_path):
    sweep = tmp_path / "sweep"
    args = [o for o in tiny_overrides(tiny_suite_dir, "callbacks=no_checkpoints") if not o.startswith("task")]
    proc = train_cli("-m", *args, "task=sva,no_such_task,all", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert "Traceback" not in proc.stderr and len(errors) == 1 and "job 1: In 'train': Could not find 'task/no_such_task'" in errors[0]
    assert json.loads((sweep / "0" / "results.json").read_text())["task"] == "sva"
    assert json.loads((sweep / "2" / "results.json").read_text())["task"] == "all"  # numbers are kept
    assert "Could not find 'task/no_such_task'" in json.loads((sweep / "1" / "failure.json").read_text())["error"]

    from gradspace.probing.transfer import read_multirun_dir

    records = read_multirun_dir(sweep)
    assert len(records.records) == 2 and any("job 1: failed (MissingConfigException" in p for p in records.problems)


def test_explicit_wandb_mode_wins_over_credentials(tmp_path, monkeypatch):
    from gradspace.utils import wandb_setup

    def no_login():
        raise AssertionError("an explicit WANDB_MODE=offline must not try the server")

    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(wandb_setup, "online_login_failure", no_login)
    try:
        logger = wandb_setup.make_wandb_logger(project="p", mode="auto", save_dir=tmp_path, name="n", group=None, tags=[], config={})
        assert logger.experiment.settings.mode == "offline"
    finally:
        wandb_setup.finish_wandb()
    assert os.environ["WANDB_MODE"] == "offline"


def test_failed_wandb_login_falls_back_to_offline_once_in_bounded_time(tmp_path, monkeypatch, capfd):
    import wandb

    from gradspace.utils import wandb_setup

    wandb.teardown()  # wandb keeps the settings of its first use in the process (an earlier test's offline mode)

    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    wandb_setup.online_login_failure.cache_clear()
    start = time.perf_counter()
    try:
        logger = wandb_setup.make_wandb_logger(project="p", mode="auto", save_dir=tmp_path, name="n", group=None, tags=[], config={})
        assert logger.experiment.settings.mode == "offline"
    finally:
        wandb_setup.finish_wandb()
        wandb_setup.online_login_failure.cache_clear()
    assert time.perf_counter() - start < 30
    warnings = [line for line in capfd.readouterr().err.splitlines() if line.startswith("warning: W&B login failed")]
    assert len(warnings) == 1 and "this run logs offline, upload it later with `wandb sync" in warnings[0]
    assert "WANDB_MODE" not in os.environ
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 1


def test_a_wandb_run_starts_without_the_anonymous_setting_warning(tmp_path):
    # In a fresh process: wandb prints the warning once per process, so an earlier test's run would hide it.
    script = (
        "from gradspace.utils import wandb_setup\n"
        f"logger = wandb_setup.make_wandb_logger(project='p', mode='offline', save_dir={str(tmp_path)!r}, name='n',"
        " group=None, tags=[], config={})\n"
        "wandb_setup.finish_wandb()\n"
    )
    env = {**os.environ, "WANDB_SILENT": "false"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "anonymous" not in proc.stdout + proc.stderr
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 1


def test_debug_fdr_runs_one_training_step_and_writes_no_checkpoint(tiny_suite_dir, tmp_path):
    results = run_in_process(tiny_suite_dir, tmp_path / "run", "debug=fdr", "ftgd.max_steps=5")
    assert results.steps == 1 and not (tmp_path / "run" / "checkpoints").exists()
    assert json.loads((tmp_path / "run" / "results.json").read_text())["transfer"]
