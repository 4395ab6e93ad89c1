import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from gradspace.synth import pretrain as pretrain_module
from gradspace.synth import world as world_module
from gradspace.synth.pretrain import (
    CHECKPOINTS_FILE,
    EncodedCorpus,
    PretrainConfig,
    config_hash,
    ensure_synth_model,
    packed_batches,
    pretrain,
    synth_revisions,
)
from gradspace.synth.world import WorldConfig, load_or_build_world
from gradspace.utils.cache import COMPLETE_MARKER

pytestmark = pytest.mark.integration

WORLD = WorldConfig(seed=0, n_train_sentences=400, n_heldout_sentences=60, pairs_per_task=4)
TINY = PretrainConfig(
    hidden_size=32,
    num_layers=2,
    num_heads=2,
    intermediate_size=64,
    max_position_embeddings=64,
    block_size=32,
    batch_size=8,
    steps=30,
    lr=5e-3,
    warmup_steps=3,
    checkpoint_steps=(10, 30),
    seed=0,
)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("synth-cache")


@pytest.fixture(scope="module")
def root(cache_dir):
    return ensure_synth_model("synth-tiny", WORLD, TINY, cache_dir, progress=False, num_threads=1)


def test_writes_every_checkpoint_with_weights_and_tokenizer(root):
    assert root.name == f"synth-tiny-{config_hash(WORLD, TINY)}"
    assert synth_revisions(root) == ["step10", "step30", "main"]
    for revision in synth_revisions(root):
        files = {path.name for path in (root / revision).iterdir()}
        assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files
    assert (root / COMPLETE_MARKER).is_file()
    info = json.loads((root / CHECKPOINTS_FILE).read_text())
    assert info["world_config"]["n_train_sentences"] == WORLD.n_train_sentences
    assert info["pretrain_config"]["checkpoint_steps"] == [10, 30]
    # Nothing of the training run is left beside the finished root.
    assert [path.name for path in root.parent.iterdir() if path.name.endswith(".partial")] == []


def test_loss_decreases_between_checkpoints(root):
    step10, step30, main = json.loads((root / CHECKPOINTS_FILE).read_text())["checkpoints"]
    assert step30["train_loss"] < step10["train_loss"]
    assert step30["heldout_loss"] < step10["heldout_loss"]
    assert main["heldout_loss"] == step30["heldout_loss"] and main["revision"] == "main"


def test_checkpoints_load_as_pythia_like_gpt_neox(root):
    model = AutoModelForCausalLM.from_pretrained(root / "step10")
    tokenizer = AutoTokenizer.from_pretrained(root / "step10")
    assert type(model).__name__ == "GPTNeoXForCausalLM"
    assert model.config.use_parallel_residual and not model.config.tie_word_embeddings
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.hidden_size == 32 and model.config.num_hidden_layers == 2
    ids = tokenizer(["<|endoftext|> " + load_or_build_world(WORLD, root.parent).heldout_corpus[0]], return_tensors="pt")
    assert tokenizer.unk_token_id not in ids["input_ids"][0].tolist()
    logits = model(**ids).logits
    assert logits.shape == (1, ids["input_ids"].shape[1], len(tokenizer))


def test_main_is_the_final_step_and_differs_from_earlier_checkpoints(root):
    step10 = load_file(root / "step10" / "model.safetensors")
    step30 = load_file(root / "step30" / "model.safetensors")
    main = load_file(root / "main" / "model.safetensors")
    assert all(torch.equal(main[key], step30[key]) for key in step30)
    assert not all(torch.equal(step10[key], step30[key]) for key in step30)


def test_second_call_reuses_the_cache_without_training(root, cache_dir, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("pretrain ran although the cache is complete")

    marker_time = (root / COMPLETE_MARKER).stat().st_mtime_ns
    monkeypatch.setattr(pretrain_module, "pretrain", fail)
    assert ensure_synth_model("synth-tiny", WORLD, TINY, cache_dir, progress=False) == root
    assert (root / COMPLETE_MARKER).stat().st_mtime_ns == marker_time


def test_interrupted_training_leaves_no_cache(tmp_path, monkeypatch):
    def interrupted(world, config, out_dir, **kwargs):
        (out_dir / "step0").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(pretrain_module, "pretrain", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ensure_synth_model("synth-tiny", WORLD, TINY, tmp_path, progress=False)
    assert not (tmp_path / f"synth-tiny-{config_hash(WORLD, TINY)}").exists()
    assert [path.name for path in tmp_path.iterdir() if path.name.endswith(".partial")] == []


def test_same_seed_trains_identical_weights(tmp_path):
    world = load_or_build_world(WORLD, tmp_path)
    config = replace(TINY, steps=5, warmup_steps=1, checkpoint_steps=(5,))
    first = pretrain(world, config, tmp_path / "a", progress=False, num_threads=1)
    second = pretrain(world, config, tmp_path / "b", progress=False, num_threads=1)
    a, b = load_file(first / "main" / "model.safetensors"), load_file(second / "main" / "model.safetensors")
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_cache_key_depends_on_both_configs_and_the_grammar_version(monkeypatch):
    key = config_hash(WORLD, TINY)
    assert key != config_hash(WORLD, replace(TINY, steps=31))
    assert key != config_hash(replace(WORLD, seed=1), TINY)
    # Hydra passes lists; they normalise to the same config and key as tuples.
    assert key == config_hash(WORLD, replace(TINY, checkpoint_steps=[30, 10]))
    monkeypatch.setattr(world_module, "GRAMMAR_VERSION", world_module.GRAMMAR_VERSION + 1)
    assert key != config_hash(WORLD, TINY)


def test_packed_batches_keep_every_token_in_a_seeded_order():
    sentences = EncodedCorpus.from_token_lists([[0, 10 + i, 20 + i] for i in range(7)])  # 21 tokens

    def take(seed):
        return [b.clone() for _, b in zip(range(4), packed_batches(sentences, 2, 4, torch.Generator().manual_seed(seed)))]

    first, again, other = take(0), take(0), take(1)
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    assert not all(torch.equal(x, y) for x, y in zip(first, other))
    assert all(batch.shape == (2, 4) for batch in first)
    # The first epoch's 16 tokens are five whole sentences "<eos> w w" in a shuffled order, then the sixth's <eos>.
    stream = torch.cat([batch.flatten() for batch in first[:2]])
    rows = stream[:15].view(5, 3).tolist()
    assert all(row[0] == 0 and row[2] == row[1] + 10 for row in rows) and len({row[1] for row in rows}) == 5
    assert stream[15].item() == 0
    assert [row[1] for row in rows] != sorted(row[1] for row in rows)
