"""The synthetic world: a corpus for pretraining, held-out text, and minimal pairs the corpus never contains."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping

from gradspace.errors import GradspaceError
from gradspace.pairs import MinimalPair, read_pairs_jsonl, write_pairs_jsonl
from gradspace.synth.grammar import SYNTH_TASKS, Grammar
from gradspace.utils.cache import build_once
from gradspace.utils.io import atomic_write_text
from gradspace.utils.run_config import plain_section

# Bump when the grammar changes what it generates, so cached worlds of the old grammar are not reused.
GRAMMAR_VERSION = 2


@dataclass
class WorldConfig:
    seed: int = 0
    n_train_sentences: int = 200_000
    n_heldout_sentences: int = 2_000
    pairs_per_task: int = 1000

    def digest(self) -> str:
        """A short hash of the config and the grammar version: the cache key."""
        payload = json.dumps({"grammar_version": GRAMMAR_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


@dataclass
class SynthWorld:
    config: WorldConfig
    vocabulary: list[str]
    train_corpus: list[str]
    heldout_corpus: list[str]
    pairs: list[MinimalPair]

    def pairs_for(self, task: str) -> list[MinimalPair]:
        return [pair for pair in self.pairs if pair.task == task]


def _task_pairs(grammar: Grammar, task: str, config: WorldConfig) -> list[MinimalPair]:
    """`pairs_per_task` pairs with distinct good sentences."""
    rng = random.Random(f"{config.seed}:pairs:{task}")
    seen: set[str] = set()
    pairs: list[MinimalPair] = []
    attempts = 0
    while len(pairs) < config.pairs_per_task:
        attempts += 1
        if attempts > 50 * config.pairs_per_task:
            raise GradspaceError(
                f"task {task}: only {len(pairs)} distinct pairs after {attempts} draws; lower world.pairs_per_task"
            )
        good, bad = grammar.pair(task, rng)
        if good in seen:
            continue
        seen.add(good)
        pairs.append(MinimalPair(good, bad, task, SYNTH_TASKS[task], str(len(pairs))))
    return pairs


def _corpus(grammar: Grammar, rng: random.Random, size: int, excluded: set[str]) -> list[str]:
    """`size` sentences sampled from the grammar, none of them in `excluded`."""
    corpus: list[str] = []
    while len(corpus) < size:
        sentence = grammar.sentence(rng)
        if sentence not in excluded:
            corpus.append(sentence)
    return corpus


def build_world(config: WorldConfig) -> SynthWorld:
    """Deterministic in `config`: the pairs first, then train and held-out text filtered against every pair sentence."""
    if min(config.n_train_sentences, config.n_heldout_sentences, config.pairs_per_task) < 1:
        raise GradspaceError(f"world config {config}: sentence and pair counts must be positive; fix world.*")
    grammar = Grammar(config.seed)
    pairs = [pair for task in SYNTH_TASKS for pair in _task_pairs(grammar, task, config)]
    excluded = {pair.good for pair in pairs} | {pair.bad for pair in pairs}
    train = _corpus(grammar, random.Random(f"{config.seed}:train"), config.n_train_sentences, excluded)
    heldout = _corpus(grammar, random.Random(f"{config.seed}:heldout"), config.n_heldout_sentences, excluded)
    return SynthWorld(config, grammar.vocabulary, train, heldout, pairs)


def world_cache_path(config: WorldConfig, cache_dir: str | Path) -> Path:
    return Path(cache_dir) / f"world-{config.digest()}"


def _write_world(world: SynthWorld, directory: Path) -> None:
    atomic_write_text(directory / "config.json", json.dumps(asdict(world.config), indent=2, sort_keys=True) + "\n")
    atomic_write_text(directory / "vocab.txt", "\n".join(world.vocabulary) + "\n")
    atomic_write_text(directory / "train.txt", "\n".join(world.train_corpus) + "\n")
    atomic_write_text(directory / "heldout.txt", "\n".join(world.heldout_corpus) + "\n")
    for task in SYNTH_TASKS:
        write_pairs_jsonl(directory / "pairs" / f"{task}.jsonl", world.pairs_for(task))


def _read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _read_world(config: WorldConfig, directory: Path) -> SynthWorld:
    pairs = [pair for task in SYNTH_TASKS for pair in read_pairs_jsonl(directory / "pairs" / f"{task}.jsonl")]
    return SynthWorld(
        config,
        _read_lines(directory / "vocab.txt"),
        _read_lines(directory / "train.txt"),
        _read_lines(directory / "heldout.txt"),
        pairs,
    )


def load_or_build_world(config: WorldConfig, cache_dir: str | Path) -> SynthWorld:
    """Read the world from `cache_dir/world-<hash>`, or build it and cache it there.

    `build_once` writes it under a lock into a directory renamed into place when complete, with a manifest of
    every file's hash: a cached world whose held-out text or pairs were cut or changed is built again (in seconds)
    rather than used, or blamed on the user as a bad pairs line.
    """
    target = build_once(world_cache_path(config, cache_dir), lambda directory: _write_world(build_world(config), directory))
    return _read_world(config, target)


def world_for_model(model_cfg: Mapping, cache_dir: str | Path) -> SynthWorld:
    """The synthetic world a model config speaks: its `world` section, or the default world for other models."""
    world_cfg = plain_section(model_cfg.get("world")) if model_cfg.get("source") == "synth" else {}
    return load_or_build_world(WorldConfig(**world_cfg), cache_dir)
