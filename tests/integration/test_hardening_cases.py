"""Issue 32's last request: more hostile-but-realistic cases through the entry points as a user types them (faults
during writes, odd settings, caches that cannot be written), each of which used to end in a traceback, a crash or a
silently wrong run."""

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from test_hardening import assert_one_line_exit_2  # the one-line error check of every hardening test

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# A synthetic model small enough that its world is the only thing built before a cache problem shows.
TINY_SYNTH = ["model=synth-1m", "model.world.n_train_sentences=3000", "model.world.n_heldout_sentences=200",
              "model.world.pairs_per_task=40", "logger=none", "torch_threads=1", "task.name=sva"]


def tiny_overrides(suite: Path, *extra: str) -> list[str]:
    return ["model=local", f"model.path={suite / 'model'}", "data.source=jsonl", f"data.path={suite / 'suite'}",
            "task=paradigm", "task.name=sva", "logger=none", f"paths.cache_dir={suite / 'cache'}", "ftgd.max_steps=2",
            "ftgd.batch_size=4", "torch_threads=1", "+trainer.enable_progress_bar=false",
            "+trainer.enable_model_summary=false", *extra]


def label_overrides(model_dir: Path, *extra: str) -> list[str]:
    return ["model=local", f"model.path={model_dir}", "logger=none", f"paths.cache_dir={model_dir.parent / 'cache'}",
            "prompt.style=synth", "label.steps=2", "label.restarts=1", "torch_threads=1",
            "+trainer.enable_progress_bar=false", *extra]


def cli(script: str, *args: str, cwd: Path, env: dict | None = None, file_size_limit: int | None = None):
    base = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    # The file-size limit (ulimit -f) stands in for a disk that fills up: writes beyond it fail with EFBIG.
    limit = (lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))) if file_size_limit else None
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd, env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=300, preexec_fn=limit)


def test_more_torch_threads_than_cpus_is_one_line(tiny_suite_dir, tmp_path):
    # A billion threads ended in "libgomp: Out of memory allocating 216000001344 bytes" and exit 1.
    proc = cli("train.py", *tiny_overrides(tiny_suite_dir), "torch_threads=1000000000", f"hydra.run.dir={tmp_path / 'run'}",
               cwd=tmp_path)
    assert_one_line_exit_2(proc, f"torch_threads=1000000000 is not a whole number in 1..{os.cpu_count()} (this machine's CPUs)")


@pytest.mark.parametrize("how", ["setting", "environment"])
def test_a_cache_dir_that_is_a_file_is_one_line(how, tmp_path):
    cache = tmp_path / "cache"
    cache.write_text("not a directory\n")
    setting = [f"paths.cache_dir={cache}"] if how == "setting" else []
    proc = cli("train.py", *TINY_SYNTH, *setting, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path,
               env={"GRADSPACE_CACHE": str(cache)})
    line = assert_one_line_exit_2(proc, f"in the cache {cache} ({cache} is a file); set paths.cache_dir=<dir> (or "
                                        f"GRADSPACE_CACHE) to a writable directory")
    assert line.startswith("error: cannot build world-")
    assert cache.read_text() == "not a directory\n"


def test_a_read_only_cache_dir_is_one_line(tmp_path):
    proc = cli("probe.py", "model=synth-1m", "model.world.n_train_sentences=3000", "logger=none",
               "paths.cache_dir=/proc/gradspace-cache", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert_one_line_exit_2(proc, "in the cache /proc/gradspace-cache (No such file or directory)")


def test_a_disk_that_fills_up_during_a_run_is_one_line_and_leaves_nothing_half_written(tiny_suite_dir, tmp_path):
    run_dir = tmp_path / "run"
    # Room for the logs and saved configs, not for a checkpoint.
    proc = cli("train.py", *tiny_overrides(tiny_suite_dir), f"hydra.run.dir={run_dir}", cwd=tmp_path,
               file_size_limit=100 * 1024)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2 and len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert errors[0] == (f"error: a write into {run_dir} or paths.cache_dir failed (File too large); no file was left "
                         f"half-written: free space (or raise the limit) and rerun, or write elsewhere with "
                         f"hydra.run.dir=<dir> and paths.cache_dir=<dir>")
    assert not (run_dir / "results.json").exists()
    assert not [path for path in run_dir.rglob("*") if path.is_file() and path.stat().st_size >= 100 * 1024]
    assert not list(run_dir.rglob("*.tmp"))


def test_a_disk_that_fills_up_in_a_sweep_records_the_job_as_failed(tiny_suite_dir, tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli("train.py", "-m", *tiny_overrides(tiny_suite_dir), f"hydra.sweep.dir={sweep}", cwd=tmp_path,
               file_size_limit=100 * 1024)
    assert proc.returncode != 0
    failure = json.loads((sweep / "0" / "failure.json").read_text())
    assert failure["error"].startswith(f"GradspaceError: a write into {sweep / '0'} or paths.cache_dir failed (File too large)")


def test_a_nan_threshold_is_named_as_such(tiny_model_dir, tmp_path):
    records = tmp_path / "records.jsonl"
    records.write_text(json.dumps({"feature": "f", "text": "the dog runs", "char_start": 4, "char_end": 7,
                                   "activation": 1.0}) + "\n")
    proc = cli("label.py", *label_overrides(tiny_model_dir, "feature=records", f"feature.path={records}",
                                            "prompt=contextual", "feature.threshold=nan"),
               f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert_one_line_exit_2(proc, "feature.threshold=nan is not a finite number")


def test_a_negative_max_texts_is_refused(tiny_model_dir, tmp_path):
    # The corpus is cut with [:max_texts]: -1 silently dropped the last text.
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the dog runs near the cat\nthe bird sees a dog\nthe cat runs\n")
    proc = cli("label.py", *label_overrides(tiny_model_dir, "feature=animals", "feature.sets.animals=[dog,cat,bird,fish]",
                                            f"feature.corpus_path={corpus}", "feature.max_texts=-1"),
               f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert_one_line_exit_2(proc, "feature.max_texts=-1 is not a whole number >= 0")


def test_a_corpus_that_is_not_utf8_is_one_line(tiny_model_dir, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes("the dog runs\nthe bïrd sees a dog\n".encode("latin-1"))
    proc = cli("label.py", *label_overrides(tiny_model_dir, "feature=animals", "feature.sets.animals=[dog,cat,bird,fish]",
                                            f"feature.corpus_path={corpus}"),
               f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert_one_line_exit_2(proc, f"feature.corpus_path={corpus} is not UTF-8 text (invalid continuation byte at byte 18)")


def test_a_second_sweep_into_a_used_sweep_dir_is_refused_and_changes_nothing(tiny_suite_dir, tmp_path):
    sweep = tmp_path / "sweep"
    first = cli("train.py", "-m", *tiny_overrides(tiny_suite_dir), "task.name=sva,npi", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    before = {path: path.read_bytes() for path in sweep.rglob("*") if path.is_file()}
    # It wrote failure.json beside each finished job's results.json and the new settings over its saved configs.
    second = cli("train.py", "-m", *tiny_overrides(tiny_suite_dir), "task.name=sva,npi", "ftgd.max_steps=3",
                 f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert_one_line_exit_2(second, f"hydra.sweep.dir={sweep} already holds an earlier sweep (0, 1, multirun.yaml); "
                                   f"nothing was changed")
    assert {path: path.read_bytes() for path in sweep.rglob("*") if path.is_file()} == before


@pytest.mark.parametrize("text, max_texts", [("the dog runs\nthe cat runs\n", 0), ("\n  \n", 4000)])
def test_a_corpus_with_no_text_to_count_is_one_line(text, max_texts, tiny_model_dir, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text)
    proc = cli("label.py", *label_overrides(tiny_model_dir, "feature=animals", "feature.sets.animals=[dog,cat,bird,fish]",
                                            f"feature.corpus_path={corpus}", f"feature.max_texts={max_texts}"),
               f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert_one_line_exit_2(proc, f"the corpus leaves no text to count words in ({text.count('runs')} non-empty lines, "
                                 f"feature.max_texts={max_texts})")
