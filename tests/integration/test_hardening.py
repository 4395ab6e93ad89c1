"""Issue 32's hostile-but-realistic cases, each through the entry point and Hydra as a user types it: size settings
bounded before a model loads, environment secrets kept out of every file and output, refused reruns that change
nothing, one run per directory, pairs that tokenize alike, probe job directories, BOM files and sweep launch lines."""

import fcntl
import json
import os
import resource
import shutil
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


def suite_copy(suite: Path, scratch: Path, extra: dict[str, list[tuple[str, str]]]) -> Path:
    """The tiny suite's files plus `extra` pairs (task -> [(good, bad)]), each task in a file of its own."""
    copy = scratch / "suite"
    shutil.copytree(suite / "suite", copy)
    for task, pairs in extra.items():
        with (copy / f"{task}.jsonl").open("a") as handle:
            for index, (good, bad) in enumerate(pairs):
                handle.write(json.dumps({"sentence_good": good, "sentence_bad": bad, "UID": task, "pairID": f"x{index}"}) + "\n")
    return copy


# Words outside the tiny model's vocabulary: both sentences of each pair are the same <unk> tokens.
UNKNOWN_PAIRS = [(f"the {a} runs {n}", f"the {b} runs {n}") for n in range(4) for a, b in (("zebra", "okapi"), ("lynx", "ibex"), ("gnu", "yak"))]


# Item 7: pairs the tokenizer makes identical are left out with a warning; a task left with none is an error.
def test_pairs_that_tokenize_alike_are_left_out_with_a_warning(tiny_suite_dir, tmp_path):
    suite = suite_copy(tiny_suite_dir, tmp_path, {"sva": UNKNOWN_PAIRS})
    run_dir = tmp_path / "run"
    proc = cli("train.py", *tiny_overrides(tiny_suite_dir, "callbacks=no_checkpoints"), f"data.path={suite}",
               f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: left out")]
    assert len(warnings) == 1 and "pair(s) whose sentence_good and sentence_bad the model's tokenizer makes the same tokens" in warnings[0]
    assert json.loads((run_dir / "results.json").read_text())["train_pairs"] == 55  # the tiny suite's own, as without them


@pytest.mark.parametrize("script", ["train.py", "probe.py"])
def test_a_task_whose_pairs_all_tokenize_alike_is_an_error(script, tiny_suite_dir, tmp_path):
    suite = suite_copy(tiny_suite_dir, tmp_path, {"ghost": UNKNOWN_PAIRS})
    if script == "train.py":
        overrides = [*tiny_overrides(tiny_suite_dir), "task.name=ghost"]
    else:  # probe.py takes every task of the suite, and no ftgd or trainer settings
        overrides = [*[o for o in tiny_overrides(tiny_suite_dir) if not o.startswith(("task", "ftgd", "+trainer"))],
                     "task=all", "source.inprocess=false"]
    proc = cli(script, *overrides, f"data.path={suite}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    errors = error_lines(proc.stderr)
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-3000:]
    assert errors[0].startswith("error: task ghost: the model's tokenizer makes the two sentences of every pair left to train on the same tokens")
    assert not (tmp_path / "run" / "results.json").exists()


# Item 10: task names that are no safe path component (`.`, `..`, `a/b`) get job directories of their own.
def test_probe_job_directories_of_dot_names_are_distinct(tiny_suite_dir, tmp_path):
    suite = tmp_path / "suite"
    suite.mkdir()
    rows = [json.loads(line) for line in (tiny_suite_dir / "suite" / "sva.jsonl").read_text().splitlines()]
    for index, uid in enumerate([".", "..", "a/b", "a_b"]):
        lines = [json.dumps({**row, "UID": uid, "linguistics_term": "same"}) for row in rows[18 * index: 18 * (index + 1)]]
        (suite / f"task{index}.jsonl").write_text("\n".join(lines) + "\n")
    run_dir = tmp_path / "run"
    overrides = [o for o in tiny_overrides(tiny_suite_dir) if not o.startswith(("task", "ftgd", "+trainer"))]
    proc = cli("probe.py", *overrides, "task=all", f"data.path={suite}", "plots=false", "progress=false",
               "gradient.sketch_dim=256", "hypothesis.n_permutations=10", "data.max_eval_pairs_per_task=4",
               "transfer.train_overrides=['ftgd.max_steps=1','ftgd.batch_size=2','heldout.max_sentences=4']",
               f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    files = results["checkpoints"][0]["transfer"]["results_files"]
    assert len(set(files)) == 4 and all(path.startswith("transfer/local@main/") for path in files), files
    trained = {json.loads((run_dir / path).read_text())["task"] for path in files}
    assert trained == {".", "..", "a/b", "a_b"}
    assert not (run_dir / "transfer" / "results.json").exists() and not (run_dir / "results.json.tmp").exists()


# Item 13: a UTF-8 byte-order mark is read; results.json is written before timings.json; launch lines hide secrets.
def test_files_with_a_byte_order_mark_are_read(tiny_suite_dir, tmp_path):
    suite = suite_copy(tiny_suite_dir, tmp_path, {})
    (suite / "sva.jsonl").write_bytes(b"\xef\xbb\xbf" + (suite / "sva.jsonl").read_bytes())
    before = {}
    for mark in ("", "\ufeff"):
        heldout = tmp_path / f"heldout{len(mark)}.txt"
        heldout.write_bytes(f"{mark}the dog runs\nthe cat sees a bird\n".encode())
        run_dir = tmp_path / f"run{len(mark)}"
        proc = cli("train.py", *tiny_overrides(tiny_suite_dir, "callbacks=no_checkpoints"), f"data.path={suite}",
                   "heldout.source=text", f"heldout.path={heldout}", f"hydra.run.dir={run_dir}", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results = json.loads((run_dir / "results.json").read_text())
        assert results["train_pairs"] == 55
        before[mark] = results["heldout_lm_loss"]["before"]
    assert before[""] == before["\ufeff"], "the mark was read as part of the first held-out sentence"


def test_a_failed_results_write_leaves_no_timings(tiny_suite_dir, tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "results.json").mkdir(parents=True)  # a directory where the results go: their write fails
    proc = cli("train.py", *tiny_overrides(tiny_suite_dir, "callbacks=no_checkpoints"), f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode != 0 and "results.json" in proc.stderr
    assert not (run_dir / "timings.json").exists()


def test_sweep_launch_lines_show_no_secret(tiny_suite_dir, tmp_path):
    sweep = tmp_path / "sweep"
    overrides = [o for o in tiny_overrides(tiny_suite_dir, "callbacks=no_checkpoints") if not o.startswith("task.name")]
    proc = cli("train.py", "-m", *overrides, "task.name=sva,npi", f"+my_token={WANDB_SECRET}", f"+pasted={HF_SECRET}",
               f"hydra.sweep.dir={sweep}", cwd=tmp_path, env={"HF_TOKEN": HF_SECRET})
    assert proc.returncode == 0, proc.stderr[-3000:]
    launches = [line for line in proc.stdout.splitlines() if " : " in line and "#" in line]
    assert len(launches) == 2 and all("+my_token=<redacted> +pasted=<redacted>" in line for line in launches), launches
    output = proc.stdout + proc.stderr + "".join(path.read_text(errors="replace") for path in sweep.rglob("*") if path.is_file())
    assert WANDB_SECRET not in output and HF_SECRET not in output
