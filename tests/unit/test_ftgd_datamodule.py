"""The training pair stream: batches are a function of the step, split over processes, and reshuffled per epoch."""

import pytest

from gradspace.errors import GradspaceError
from gradspace.ftgd.datamodule import StepIndexedPairBatches
from gradspace.pairs import MinimalPair
from gradspace.synth.tokenizer import build_word_tokenizer

pytestmark = pytest.mark.unit

PAIRS = [MinimalPair(f"the dog w{i} runs", f"the dog w{i} run", "sva", "agreement", str(i)) for i in range(10)]
TOKENIZER = build_word_tokenizer(["the", "dog", "runs", "run", *(f"w{i}" for i in range(10))])


def stream(**kwargs) -> StepIndexedPairBatches:
    return StepIndexedPairBatches(TOKENIZER, PAIRS, "bounded", **{"global_batch_size": 4, "seed": 0, **kwargs})


def ids(pairs) -> list[str]:
    return [pair.id for pair in pairs]


def test_each_epoch_visits_every_pair_once_in_a_new_order():
    batches = stream()
    first_epoch = [pid for k in range(5) for pid in ids(batches.pairs_of_batch(k))][:10]
    second_epoch = [pid for k in range(5, 10) for pid in ids(batches.pairs_of_batch(k))][:10]
    assert sorted(first_epoch) == sorted(second_epoch) == sorted(p.id for p in PAIRS)
    all_positions = [pid for k in range(10) for pid in ids(batches.pairs_of_batch(k))]
    assert all_positions[10:20] != all_positions[:10]


def test_resuming_at_a_step_continues_with_the_same_batches():
    full = iter(stream())
    for _ in range(3):
        next(full)
    resumed = iter(stream(start_batch=3))
    for _ in range(3):
        a, b = next(full), next(resumed)
        assert a.batch.input_ids.equal(b.batch.input_ids) and a.n_pairs == b.n_pairs == 4


def test_processes_split_the_global_batch_and_a_different_seed_reorders():
    one = stream()
    ranks = [stream(rank=r, world_size=2) for r in range(2)]
    for k in range(4):
        assert ids(ranks[0].pairs_of_batch(k)) + ids(ranks[1].pairs_of_batch(k)) == ids(one.pairs_of_batch(k))
    assert ids(stream(seed=1).pairs_of_batch(0)) != ids(one.pairs_of_batch(0))


def test_batch_size_must_divide_over_processes():
    with pytest.raises(GradspaceError, match="not divisible by the 3 training processes"):
        stream(world_size=3)


def test_rows_are_good_then_bad():
    batch = next(iter(stream()))
    good = TOKENIZER.convert_ids_to_tokens(batch.batch.input_ids[0].tolist())
    bad = TOKENIZER.convert_ids_to_tokens(batch.batch.input_ids[4].tolist())
    assert good[-1] == "runs" and bad[-1] == "run" and batch.batch.input_ids.shape[0] == 8


def task_data(pairs: list[MinimalPair], reserve_fraction: float = 0.3):
    from gradspace.data.suite import TaskData, TaskSuite, split_pairs

    split = split_pairs(pairs, 0.3, reserve_fraction=reserve_fraction)
    return TaskData(suite=TaskSuite("jsonl", pairs), tasks=["sva"], train=[p for p in split.train if p.task == "sva"],
                    eval=[p for p in split.eval if p.task == "sva"], eval_all=split.eval, split=split)


def test_heldout_text_defaults_to_reserved_sentences_that_no_used_pair_contains(tmp_path):
    from gradspace.ftgd.config import HeldoutConfig
    from gradspace.ftgd.datamodule import heldout_sentences

    def heldout(source: str, path: str | None = None, max_sentences: int | None = None) -> HeldoutConfig:
        return HeldoutConfig(source=source, path=path, max_sentences=max_sentences)

    npi = [MinimalPair(f"no dog ever w{i}", f"the dog ever w{i}", "npi", "npi", str(i)) for i in range(40)]
    # Every sva good sentence also stands in a second pair, as BLiMP repeats sentences across pairs.
    shared = [MinimalPair(p.good, p.good + " again", "sva_copy", "agreement", str(i)) for i, p in enumerate(PAIRS)]
    data = task_data(PAIRS + npi + shared)
    local = {"source": "local"}
    sentences = heldout_sentences(heldout("auto"), local, data, tmp_path)
    used = {s for p in data.split.train + data.split.eval for s in (p.good, p.bad)}
    reserved_good = {p.good for p in data.split.reserved}
    assert sentences and not set(sentences) & used and set(sentences) <= reserved_good
    assert len(sentences) == len(set(sentences))
    assert heldout_sentences(heldout("auto", max_sentences=2), local, data, tmp_path) == sentences[:2]
    with pytest.raises(GradspaceError, match="raise data.reserve_fraction"):
        heldout_sentences(heldout("auto"), local, task_data(PAIRS, reserve_fraction=0.0), tmp_path)
    text = tmp_path / "general.txt"
    text.write_text("a first line\n\n  a second line \n")
    assert heldout_sentences(heldout("auto", str(text)), local, task_data(PAIRS), tmp_path) == ["a first line", "a second line"]
    with pytest.raises(GradspaceError, match="heldout.source=synth needs a synthetic model"):
        heldout_sentences(heldout("synth"), local, task_data(PAIRS), tmp_path)
    with pytest.raises(GradspaceError, match="heldout.source='web' is unknown"):
        heldout("web")
