"""Each FTGD and probing benchmark runs end to end at its smallest setting: the scripts that produce the numbers
RESULTS.md quotes break here, not the next time someone measures."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BLIMP_DIR

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def run_benchmark(script: str, *args: str, **env_vars: str) -> str:
    env = {**os.environ, **env_vars, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_ftgd_step_benchmark_on_a_tiny_local_model(tiny_suite_dir, tmp_path):
    out = run_benchmark(
        "bench_ftgd_step.py", "--model", "local", "--task", "paradigm", "--pairs-per-step", "4", "--steps", "3",
        "--rounds", "1", "--output-dir", str(tmp_path),
        *[f"--override={item}" for item in (f"model.path={tiny_suite_dir / 'model'}", "task.name=sva", "data.source=jsonl",
                                             f"data.path={tiny_suite_dir / 'suite'}", f"paths.cache_dir={tmp_path / 'cache'}")])
    assert "ratio FTGD/LM step time, same tokens" in out and out.strip().splitlines()[-1].startswith("summary: ")


@pytest.mark.skipif(not BLIMP_DIR.is_dir(), reason="real BLiMP data not beside the repo")
def test_similarity_memory_benchmark_on_a_tiny_model(tmp_path):
    out = run_benchmark("bench_similarity_memory.py", f"--blimp-dir={BLIMP_DIR}", "--hidden-size=32", "--layers=1",
                        "--pairs-per-task=1", "--sketch-dim=64", "--bpe-vocab-size=300", GRADSPACE_BENCH_DIR=str(tmp_path))
    assert "memory growth per task / one gradient" in out and out.strip().splitlines()[-1].startswith("summary: ")
