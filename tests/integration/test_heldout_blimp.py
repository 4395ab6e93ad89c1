"""Held-out text of a real-LM run on the real BLiMP files: disjoint from every trained or evaluated sentence."""

import pytest

from conftest import BLIMP_DIR
from gradspace.data.suite import prepare_task_data
from gradspace.ftgd.config import HeldoutConfig
from gradspace.ftgd.datamodule import heldout_sentences

pytestmark = [pytest.mark.integration, pytest.mark.skipif(not BLIMP_DIR.is_dir(), reason="real BLiMP data not beside the repo")]


def test_reserved_blimp_sentences_are_in_no_trained_or_evaluated_pair_and_span_every_paradigm(tmp_path):
    data_cfg = {"source": "auto", "path": None, "eval_fraction": 0.2, "reserve_fraction": 0.05, "split_seed": 0,
                "max_train_pairs_per_task": None, "max_eval_pairs_per_task": 10, "eval_all_tasks": True}
    task_cfg = {"name": "sva", "select": {"blimp": ["subject_verb_agreement"]}}
    data = prepare_task_data(task_cfg, data_cfg, {"source": "gguf"}, tmp_path, BLIMP_DIR)
    sentences = heldout_sentences(HeldoutConfig(source="auto", path=None, max_sentences=200), {"source": "gguf"}, data, tmp_path)
    assert len(sentences) == 200 == len(set(sentences))
    # Not only this run's pairs: no sentence of any pair that any run of this split trains or evaluates on.
    used = {s for pair in data.split.train + data.split.eval for s in (pair.good, pair.bad)}
    assert not set(sentences) & used
    assert not set(sentences) & {s for pair in data.train + data.eval_all for s in (pair.good, pair.bad)}
    paradigm_of = {pair.good: pair.task for pair in data.split.reserved}
    assert len({paradigm_of[s] for s in sentences[:67]}) == 67  # one sentence from every paradigm in turn
    assert len(data.eval_all) == 670 and {p.task for p in data.train} == set(data.tasks) and len(data.tasks) == 6


def test_eval_all_tasks_false_evaluates_only_the_trained_task_on_a_blimp_directory(tmp_path):
    data_cfg = {"source": "auto", "path": None, "eval_fraction": 0.2, "reserve_fraction": 0.0, "split_seed": 0,
                "max_train_pairs_per_task": None, "max_eval_pairs_per_task": 10, "eval_all_tasks": False}
    task_cfg = {"name": "sva", "select": {"blimp": ["subject_verb_agreement"]}}
    data = prepare_task_data(task_cfg, data_cfg, {"source": "gguf"}, tmp_path, BLIMP_DIR)
    assert {pair.task for pair in data.eval_all} == set(data.tasks) and len(data.eval_all) == 60
