"""The synthetic world: determinism, corpus/pair separation, and the atomic on-disk cache."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import pytest

import gradspace.synth.world as world_module
from gradspace.errors import GradspaceError
from gradspace.synth.grammar import SYNTH_TASKS
from gradspace.synth.world import WorldConfig, build_world, load_or_build_world, world_cache_path

pytestmark = pytest.mark.unit

SMALL = WorldConfig(seed=3, n_train_sentences=3000, n_heldout_sentences=200, pairs_per_task=40)


@pytest.fixture(scope="module")
def world():
    # The default number of pairs (their balance is what matters) with a small corpus.
    return build_world(WorldConfig(n_train_sentences=20_000, n_heldout_sentences=500))


def test_build_is_deterministic_in_the_config():
    assert build_world(SMALL) == build_world(SMALL)
    other = build_world(WorldConfig(seed=4, n_train_sentences=3000, n_heldout_sentences=200, pairs_per_task=40))
    assert other.train_corpus != build_world(SMALL).train_corpus


def test_build_does_not_depend_on_the_string_hash_seed():
    code = (
        "import hashlib; from gradspace.synth.world import WorldConfig, build_world; "
        "w = build_world(WorldConfig(n_train_sentences=500, n_heldout_sentences=20, pairs_per_task=20)); "
        "print(hashlib.sha256(repr((w.train_corpus, w.pairs)).encode()).hexdigest())"
    )
    digests = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={"PYTHONHASHSEED": hash_seed, "PATH": ""}).stdout
        for hash_seed in ("1", "2")
    }
    assert len(digests) == 1


def test_sizes_and_pair_records(world):
    assert len(world.train_corpus) == 20_000 and len(world.heldout_corpus) == 500
    counts = Counter(pair.task for pair in world.pairs)
    assert counts == {task: 1000 for task in SYNTH_TASKS}
    for task in SYNTH_TASKS:
        pairs = world.pairs_for(task)
        assert [pair.id for pair in pairs] == [str(i) for i in range(1000)]
        assert {pair.phenomenon for pair in pairs} == {SYNTH_TASKS[task]}
        assert len({pair.good for pair in pairs}) == len(pairs)
        assert all(pair.good != pair.bad for pair in pairs)


def test_no_pair_sentence_is_in_the_corpus(world):
    pair_sentences = {pair.good for pair in world.pairs} | {pair.bad for pair in world.pairs}
    assert not pair_sentences & set(world.train_corpus)
    assert not pair_sentences & set(world.heldout_corpus)


def test_corpus_words_are_in_the_vocabulary_and_all_are_used(world):
    used = {token for sentence in world.train_corpus for token in sentence.split(" ")}
    assert used == set(world.vocabulary)


def test_himself_and_herself_are_balanced(world):
    counts = Counter(
        token
        for pair in world.pairs
        if pair.phenomenon == "anaphor"
        for token in pair.good.split(" ")
        if token in ("himself", "herself")
    )
    assert abs(counts["himself"] - counts["herself"]) <= 0.1 * max(counts.values())


def test_invalid_counts_are_a_user_error():
    with pytest.raises(GradspaceError, match="must be positive"):
        build_world(WorldConfig(n_train_sentences=0))


def test_cache_round_trip_reads_the_cache_the_second_time(tmp_path, monkeypatch):
    first = load_or_build_world(SMALL, tmp_path)
    cache = world_cache_path(SMALL, tmp_path)
    assert {path.name for path in cache.iterdir()} == {"config.json", "vocab.txt", "train.txt", "heldout.txt", "pairs", "COMPLETE"}
    assert {path.stem for path in (cache / "pairs").iterdir()} == set(SYNTH_TASKS)

    def no_build(config):
        raise AssertionError("the cached world was rebuilt")

    monkeypatch.setattr(world_module, "build_world", no_build)
    assert load_or_build_world(SMALL, tmp_path) == first
    assert [path.name for path in tmp_path.iterdir() if path.suffix != ".lock"] == [cache.name]


def test_cache_key_follows_the_config(tmp_path):
    assert world_cache_path(SMALL, tmp_path) != world_cache_path(WorldConfig(seed=4), tmp_path)
    assert world_cache_path(SMALL, tmp_path) == world_cache_path(WorldConfig(**vars(SMALL)), tmp_path)


def test_interrupted_build_leaves_no_cache(tmp_path, monkeypatch):
    def fail(path, pairs):
        raise KeyboardInterrupt

    monkeypatch.setattr(world_module, "write_pairs_jsonl", fail)
    with pytest.raises(KeyboardInterrupt):
        load_or_build_world(SMALL, tmp_path)
    assert [path for path in tmp_path.iterdir() if path.suffix != ".lock"] == []
    monkeypatch.undo()
    assert load_or_build_world(SMALL, tmp_path) == build_world(SMALL)


@pytest.mark.parametrize("damage", ["deleted", "cut", "same size"])
def test_a_damaged_cache_is_built_again(damage, tmp_path):
    load_or_build_world(SMALL, tmp_path)
    heldout = world_cache_path(SMALL, tmp_path) / "heldout.txt"
    if damage == "deleted":
        heldout.unlink()
    elif damage == "cut":
        os.truncate(heldout, heldout.stat().st_size // 2)
    else:
        heldout.write_bytes(heldout.read_bytes().replace(b"the", b"teh", 1))
    assert load_or_build_world(SMALL, tmp_path) == build_world(SMALL)
