"""The synthetic model cache is verified against its manifest: a damaged file is rebuilt, not a traceback forever."""

import os

import pytest
from transformers import AutoModelForCausalLM

from gradspace.synth import pretrain as pretrain_module
from gradspace.synth.pretrain import PretrainConfig, ensure_synth_model
from gradspace.synth.world import WorldConfig

pytestmark = pytest.mark.integration

WORLD = WorldConfig(seed=0, n_train_sentences=200, n_heldout_sentences=60, pairs_per_task=4)
TINY = PretrainConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_position_embeddings=64,
                      block_size=32, batch_size=4, steps=4, warmup_steps=1, checkpoint_steps=(2,), seed=0)


@pytest.mark.parametrize("damage", ["truncate", "empty", "delete"])
def test_damaged_cached_weights_are_pretrained_again(tmp_path, monkeypatch, damage):
    root = ensure_synth_model("synth-tiny", WORLD, TINY, tmp_path, progress=False, num_threads=1)
    weights = root / "main" / "model.safetensors"
    if damage == "delete":
        weights.unlink()
    else:
        os.truncate(weights, weights.stat().st_size // 2 if damage == "truncate" else 0)
    calls = []
    real_pretrain = pretrain_module.pretrain
    monkeypatch.setattr(pretrain_module, "pretrain", lambda *args, **kwargs: calls.append(1) or real_pretrain(*args, **kwargs))
    assert ensure_synth_model("synth-tiny", WORLD, TINY, tmp_path, progress=False, num_threads=1) == root
    assert calls == [1]
    AutoModelForCausalLM.from_pretrained(root / "main")  # loads again
    assert ensure_synth_model("synth-tiny", WORLD, TINY, tmp_path, progress=False, num_threads=1) == root and calls == [1]
