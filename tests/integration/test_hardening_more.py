"""Issue 32, items 3, 5, 8 and 9, through the entry points and Hydra as a user types them: runs stopped by SIGTERM
or Ctrl-C, resuming with changed optimizer settings, caches whose content changed at the same size, and input
that used to end in a traceback."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_hardening import assert_one_line_exit_2  # the one-line error check of every hardening test

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def tiny_overrides(suite: Path, *extra: str) -> list[str]:
    return ["model=local", f"model.path={suite / 'model'}", "data.source=jsonl", f"data.path={suite / 'suite'}",
            "task=paradigm", "task.name=sva", "logger=none", f"paths.cache_dir={suite / 'cache'}", "ftgd.max_steps=2",
            "ftgd.batch_size=4", "torch_threads=1", "+trainer.enable_progress_bar=false",
            "+trainer.enable_model_summary=false", *extra]


def environment(extra: dict | None = None) -> dict:
    return {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore",
            "OMP_NUM_THREADS": "1", **(extra or {})}


def cli(script: str, *args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env=environment(env),
                          capture_output=True, text=True, timeout=300)


def default_signals() -> None:
    # A test run in the background inherits SIGINT ignored; the entry point must see Ctrl-C as a terminal sends it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def signalled(script: str, args: list[str], cwd: Path, started: Path, signum: int) -> subprocess.CompletedProcess:
    """Run `script`, send `signum` once `started` exists (the run is under way), and return the finished process."""
    proc = subprocess.Popen([sys.executable, str(ROOT / script), *args], cwd=cwd, env=environment(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_signals)
    deadline = time.monotonic() + 240
    while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, f"{script} ended before it was signalled: {proc.communicate()[1][-3000:]}"
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=240)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


# Item 3: SIGTERM ends train.py with 143, one line and a checkpoint to resume from; a sweep records the job as failed.
LONG_RUN = ["ftgd.max_steps=100000", "callbacks.model_checkpoint.every_n_train_steps=20"]


def test_sigterm_ends_train_with_143_and_a_checkpoint_that_resumes(tiny_suite_dir, tmp_path):
    run_dir = tmp_path / "run"
    proc = signalled("train.py", [*tiny_overrides(tiny_suite_dir, *LONG_RUN), f"hydra.run.dir={run_dir}"], tmp_path,
                     run_dir / "checkpoints" / "step20.ckpt", signal.SIGTERM)
    assert proc.returncode == 143, proc.stderr[-3000:]
    line = last_line(proc.stderr)
    match = re.fullmatch(r"train\.py: terminated by SIGTERM after step (\d+) of 100000; resume with ckpt_path=(\S+)", line)
    assert match and Path(match[2]) == run_dir / "checkpoints" / "last.ckpt", line
    assert not (run_dir / "results.json").exists() and not Path(match[2]).is_symlink()

    stopped = int(match[1])
    resumed = cli("train.py", *tiny_overrides(tiny_suite_dir, f"ftgd.max_steps={stopped + 2}", "callbacks=no_checkpoints"),
                  f"ckpt_path={match[2]}", f"hydra.run.dir={tmp_path / 'resumed'}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((tmp_path / "resumed" / "results.json").read_text())["steps"] == stopped + 2


def test_sigterm_in_a_sweep_records_the_job_as_failed_and_stops_the_sweep(tiny_suite_dir, tmp_path):
    sweep = tmp_path / "sweep"
    overrides = [o for o in tiny_overrides(tiny_suite_dir, *LONG_RUN) if not o.startswith("task.name")]
    proc = signalled("train.py", ["-m", *overrides, "task.name=sva,npi", f"hydra.sweep.dir={sweep}"], tmp_path,
                     sweep / "0" / "checkpoints" / "step20.ckpt", signal.SIGTERM)
    assert proc.returncode == 143, proc.stderr[-3000:]
    assert last_line(proc.stderr).startswith("train.py: terminated by SIGTERM after step ")
    failure = json.loads((sweep / "0" / "failure.json").read_text())
    assert failure["status"] == "failed" and failure["error"].startswith("Terminated: train.py: terminated by SIGTERM")
    assert not (sweep / "0" / "results.json").exists() and not (sweep / "1").exists()


def test_ctrl_c_in_probe_is_one_line_and_exit_130(tiny_suite_dir, tmp_path):
    run_dir = tmp_path / "run"
    overrides = [o for o in tiny_overrides(tiny_suite_dir) if not o.startswith(("task", "ftgd", "+trainer"))]
    proc = signalled("probe.py", [*overrides, "task=all", "plots=false", "progress=false",
                                  "transfer.train_overrides=['ftgd.max_steps=100000']", f"hydra.run.dir={run_dir}"],
                     tmp_path, run_dir / "transfer", signal.SIGINT)
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert last_line(proc.stderr) == (f"probe.py: interrupted by Ctrl-C; the finished measurements are kept: "
                                      f"rerun with hydra.run.dir={run_dir} to resume")


# Item 5: resuming with a changed optimizer setting trains with it and says so; another optimizer class is refused.
def test_resuming_with_a_new_learning_rate_trains_with_it_and_records_it(tiny_suite_dir, tmp_path):
    import torch

    first = tmp_path / "first"
    assert cli("train.py", *tiny_overrides(tiny_suite_dir), f"hydra.run.dir={first}", cwd=tmp_path).returncode == 0
    resumed = tmp_path / "resumed"
    proc = cli("train.py", *tiny_overrides(tiny_suite_dir, "ftgd.max_steps=4", "optimizer.lr=0.1"),
               f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={resumed}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((resumed / "results.json").read_text())
    assert results["config"]["optimizer"]["lr"] == 0.1
    assert results["resumed_from"]["optimizer_changes"] == {"lr": {"checkpoint": 1e-5, "used": 0.1}}
    saved = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=False)
    assert {group["lr"] for group in saved["optimizer_states"][0]["param_groups"]} == {0.1}


def test_resuming_with_another_optimizer_class_is_refused(tiny_suite_dir, tmp_path):
    first = tmp_path / "first"
    assert cli("train.py", *tiny_overrides(tiny_suite_dir), f"hydra.run.dir={first}", cwd=tmp_path).returncode == 0
    proc = cli("train.py", *tiny_overrides(tiny_suite_dir, "ftgd.max_steps=4", "optimizer._target_=torch.optim.SGD",
                                           "~optimizer.betas"),
               f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={tmp_path / 'resumed'}", cwd=tmp_path)
    assert_one_line_exit_2(proc, "error: the checkpoint's optimizer has the settings amsgrad, betas")
    assert "Loading weights" not in proc.stdout + proc.stderr, "refused after the model loaded"
    assert sorted(path.name for path in (tmp_path / "resumed").iterdir()) == [".gradspace.lock", "train.log"]


# Item 9: input that ended in a traceback is one line and exit 2, before the model loads where it can be.
def pair_file(directory: Path, *records: dict) -> Path:
    directory.mkdir(parents=True)
    good = {"sentence_good": "the dog runs", "sentence_bad": "the dog run"}
    lines = [json.dumps({**good, "UID": "sva"})] * 4 + [json.dumps({**good, **record}) for record in records]
    (directory / "sva.jsonl").write_text("\n".join(lines) + "\n")
    return directory


@pytest.mark.parametrize("record, expected", [
    ({"UID": 3}, "sva.jsonl:5: UID=3 is not a name; give UID as a text"),
    ({"UID": ["sva", "npi"]}, 'sva.jsonl:5: UID=["sva", "npi"] is not a name'),
    ({"UID": float("nan")}, "sva.jsonl:5: UID=NaN is not a name"),
    ({"UID": float("inf")}, "sva.jsonl:5: UID=Infinity is not a name"),
    ({"sentence_good": "the dog \ud800 runs"}, "sva.jsonl:5: sentence_good holds a lone surrogate (\\ud800 at character 9)"),
    ({"linguistics_term": "agr\udfffeement"}, "sva.jsonl:5: linguistics_term holds a lone surrogate"),
], ids=["number", "list", "NaN", "Infinity", "lone surrogate in a sentence", "lone surrogate in a name"])
def test_bad_pair_fields_are_one_line(record, expected, tiny_suite_dir, tmp_path):
    suite = pair_file(tmp_path / "suite", record)
    proc = cli("train.py", *tiny_overrides(tiny_suite_dir), f"data.path={suite}", "task=all",
               f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert_one_line_exit_2(proc, expected)


@pytest.mark.parametrize("script", ["train.py", "label.py"])
def test_a_seed_beyond_32_bits_is_one_line(script, tiny_suite_dir, tiny_model_dir, tmp_path):
    overrides = tiny_overrides(tiny_suite_dir) if script == "train.py" else [*label_args(tiny_model_dir), "feature=animals"]
    proc = cli(script, *overrides, "seed=4294967296", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert_one_line_exit_2(proc, "error: seed=4294967296 is not a whole number in 0..4294967295")


def label_args(model_dir: Path) -> list[str]:
    return ["model=local", f"model.path={model_dir}", "logger=none", f"paths.cache_dir={model_dir.parent / 'cache'}",
            "prompt.style=synth"]


@pytest.mark.parametrize("k", ["Infinity", "inf", "-3", "513"])
def test_a_builtin_topk_k_outside_1_to_d_sae_is_one_line(k, tiny_model_dir, tmp_path):
    proc = cli("label.py", *label_args(tiny_model_dir), "feature=sae_latent", "sae=builtin", f"sae.k={k}",
               f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert_one_line_exit_2(proc, "must be a whole number in 1..512 (the SAE's d_sae)")


@pytest.mark.parametrize("k", [float("inf"), -3, 9])
def test_a_saved_topk_k_outside_1_to_d_sae_is_one_line(k, tiny_model_dir, tmp_path):
    import torch

    from gradspace.labeling.sae import CFG_FILE, SparseAutoencoder, save_sae

    d_in, d_sae = 64, 8
    directory = save_sae(SparseAutoencoder(torch.randn(d_in, d_sae), torch.zeros(d_sae), torch.randn(d_sae, d_in),
                                           torch.zeros(d_in), architecture="topk", k=2, hook_name="blocks.0.hook_resid_post"),
                         tmp_path / "sae")
    cfg = json.loads((directory / CFG_FILE).read_text())
    (directory / CFG_FILE).write_text(json.dumps({**cfg, "k": k, "activation_fn_kwargs": {"k": k}}))
    proc = cli("label.py", *label_args(tiny_model_dir), "feature=sae_latent", "sae=local", f"sae.path={directory}",
               f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert_one_line_exit_2(proc, f"cfg.json k={k!r} must be a whole number in 1..8")


@pytest.mark.parametrize("script", ["train.py", "probe.py", "label.py"])
def test_an_output_dir_that_is_a_file_fails_before_the_model_loads(script, tiny_suite_dir, tiny_model_dir, tmp_path):
    (tmp_path / "taken").write_text("a file\n")
    if script == "label.py":
        overrides = [*label_args(tiny_model_dir), "feature=animals"]
    else:
        overrides = [o for o in tiny_overrides(tiny_suite_dir) if script == "train.py" or not o.startswith(("task", "ftgd", "+trainer"))]
    proc = cli(script, *overrides, f"paths.output_dir={tmp_path / 'taken' / 'run'}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert_one_line_exit_2(proc, f"paths.output_dir={tmp_path / 'taken' / 'run'} is no directory ({tmp_path / 'taken'} is a file)")
    assert "Loading weights" not in proc.stdout + proc.stderr


# Item 8: a cache changed after it was built (cut short, or other bytes at the same size) is built again, not used.
TINY_SYNTH = ["model=synth-1m", "model.world.n_train_sentences=400", "model.world.n_heldout_sentences=60",
              "model.world.pairs_per_task=20", "model.pretrain.hidden_size=32", "model.pretrain.num_layers=2",
              "model.pretrain.num_heads=2", "model.pretrain.intermediate_size=64",
              "model.pretrain.max_position_embeddings=64", "model.pretrain.block_size=32", "model.pretrain.batch_size=8",
              "model.pretrain.steps=30", "model.pretrain.warmup_steps=3", "model.pretrain.checkpoint_steps=[10,30]",
              "logger=none", "task=sva", "ftgd.max_steps=2", "ftgd.batch_size=4", "torch_threads=1",
              "callbacks=no_checkpoints", "+trainer.enable_progress_bar=false"]


def test_damaged_caches_are_built_again(tmp_path):
    cache = tmp_path / "cache"

    def train(name: str) -> tuple[dict, str]:
        proc = cli("train.py", *TINY_SYNTH, f"paths.cache_dir={cache}", f"hydra.run.dir={tmp_path / name}", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads((tmp_path / name / "results.json").read_text()), proc.stderr

    first, _ = train("first")
    [world] = cache.glob("world-*")
    [model] = cache.glob("synth-1m-*")

    heldout = world / "heldout.txt"  # the same size, other words: the held-out loss would change silently
    heldout.write_bytes(heldout.read_bytes()[::-1])
    results, stderr = train("heldout")
    assert f"warning: {heldout} differs from what was built there" in stderr
    assert results["heldout_lm_loss"]["before"] == first["heldout_lm_loss"]["before"]

    pairs = next((world / "pairs").glob("*.jsonl"))  # cut inside a line: it was blamed on the user's pairs
    os.truncate(pairs, pairs.stat().st_size - 7)
    results, stderr = train("pairs")
    assert f"warning: {pairs} differs from what was built there" in stderr and "fix or remove" not in stderr
    assert results["eval_before"] == first["eval_before"]

    weights = model / "main" / "model.safetensors"  # the last weights' bytes changed at the same size
    data = bytearray(weights.read_bytes())
    data[-64:] = bytes(64)
    weights.write_bytes(bytes(data))
    results, stderr = train("weights")
    assert f"warning: {weights} differs from what was built there" in stderr
    assert results["eval_before"] == first["eval_before"] and results["heldout_lm_loss"] == first["heldout_lm_loss"]
