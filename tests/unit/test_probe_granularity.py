import pytest

from conftest import train_results
from gradspace.data.blimp_paradigms import BLIMP_PARADIGMS, BLIMP_TERM_FIELDS
from gradspace.data.suite import TaskData, TaskSuite, split_pairs
from gradspace.errors import GradspaceError
from gradspace.pairs import MinimalPair
from gradspace.probing.granularity import at_granularity, phenomenon_groups, phenomenon_records

pytestmark = pytest.mark.unit


def pairs_of(task: str, phenomenon: str, n: int) -> list[MinimalPair]:
    return [MinimalPair(f"{task} good {i}", f"{task} bad {i}", task, phenomenon, str(i)) for i in range(n)]


def test_every_blimp_term_has_a_field():
    assert set(BLIMP_PARADIGMS.values()) == set(BLIMP_TERM_FIELDS)
    assert set(BLIMP_TERM_FIELDS.values()) == {"morphology", "syntax", "semantics", "syntax_semantics"}
    groups = phenomenon_groups("blimp", ["binding", "quantifiers"])
    assert groups == {"binding": "syntax_semantics", "quantifiers": "semantics"}
    assert phenomenon_groups("synth", ["anaphor"]) == {"anaphor": "anaphor"}


def test_phenomena_become_tasks_with_their_paradigms_interleaved():
    pairs = pairs_of("npi_present_1", "npi_licensing", 3) + pairs_of("only_npi_scope", "npi_licensing", 2) + pairs_of("passive_1", "argument_structure", 2)
    suite = TaskSuite("blimp", pairs)
    data = TaskData(suite=suite, tasks=suite.tasks, train=pairs, eval=pairs, eval_all=pairs, split=split_pairs(pairs, 0.5))
    terms = at_granularity(data, "phenomenon")
    assert terms.tasks == ["npi_licensing", "argument_structure"]  # ordered by field (semantics, syntax), as heatmaps group them
    assert terms.suite.phenomena == {"npi_licensing": "semantics", "argument_structure": "syntax"}
    npi = [pair.good for pair in terms.train if pair.task == "npi_licensing"]
    # The first pairs of a phenomenon come from each of its paradigms in turn (a per-task cap then covers them all).
    assert npi[:4] == ["npi_present_1 good 0", "only_npi_scope good 0", "npi_present_1 good 1", "only_npi_scope good 1"]
    assert at_granularity(data, "paradigm") is data
    with pytest.raises(GradspaceError, match="granularity=term"):
        at_granularity(data, "term")


def record(trained, before, after):
    return train_results(tasks_trained=trained, phenomena={"a1": "A", "a2": "A", "b1": "B"}, eval_before=before, eval_after=after)


def test_paradigm_rows_pool_into_phenomena_weighted_by_pairs():
    before = {"a1": {"accuracy": 0.5, "margin": 0.0, "pairs": 30}, "a2": {"accuracy": 0.5, "margin": 1.0, "pairs": 10},
              "b1": {"accuracy": 0.2, "margin": -1.0, "pairs": 5}}
    after = {"a1": {"accuracy": 0.9, "margin": 2.0, "pairs": 30}, "a2": {"accuracy": 0.5, "margin": 1.0, "pairs": 10},
             "b1": {"accuracy": 0.4, "margin": -1.0, "pairs": 5}}
    (pooled,) = phenomenon_records([record(["a1", "a2"], before, after)], {"A": "field1", "B": "field2"})
    assert pooled.tasks_trained == ["A"] and pooled.phenomena == {"A": "field1", "B": "field2"}
    assert pooled.eval_after["A"] == pytest.approx({"accuracy": (0.9 * 30 + 0.5 * 10) / 40, "margin": (2.0 * 30 + 10) / 40, "pairs": 40})
    assert pooled.transfer["A"]["accuracy"] == pytest.approx(0.3)
    assert pooled.transfer["B"] == pytest.approx({"accuracy": 0.2, "margin": 0.0})
    with pytest.raises(GradspaceError, match="paradigms of 2 phenomena"):
        phenomenon_records([record(["a1", "b1"], before, after)], {})
