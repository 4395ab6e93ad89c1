"""What a probe's task is: a paradigm (hypothesis: same phenomenon = similar) or a whole phenomenon.

At `granularity=phenomenon` every pair is relabelled: its task becomes its phenomenon (a BLiMP `linguistics_term`)
and its group, the hypothesis, becomes the phenomenon's broader category (BLiMP's `field`: morphology, syntax,
semantics, syntax_semantics). Suites without such categories keep each phenomenon in a group of its own, where the
hypothesis is constant and the comparison says so. A fine-tuned copy trains on all paradigms of its phenomenon
(`task.name=<phenomenon>` selects them) and is evaluated per paradigm; `phenomenon_records` folds those rows into
phenomena (pair-weighted means), so every transfer row is built the same way at either granularity.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Mapping

from gradspace.data.blimp_paradigms import BLIMP_TERM_FIELDS
from gradspace.data.suite import PairSplit, TaskData, TaskSuite
from gradspace.errors import GradspaceError
from gradspace.ftgd.results import TrainResults
from gradspace.pairs import MinimalPair

GRANULARITIES = ("paradigm", "phenomenon")


def check_granularity(granularity: str) -> None:
    if granularity not in GRANULARITIES:
        raise GradspaceError(f"granularity={granularity} is unknown; use paradigm (tasks = paradigms) or phenomenon (tasks = phenomena)")


def phenomenon_groups(suite_kind: str, phenomena: list[str]) -> dict[str, str]:
    """The hypothesis at phenomenon granularity: BLiMP's field of each term; elsewhere each phenomenon alone."""
    if suite_kind == "blimp":
        return {phenomenon: BLIMP_TERM_FIELDS.get(phenomenon, phenomenon) for phenomenon in phenomena}
    return {phenomenon: phenomenon for phenomenon in phenomena}


def _interleaved(pairs: list[MinimalPair]) -> list[MinimalPair]:
    """Pairs of each paradigm in turn, so that the first n pairs of a phenomenon cover all its paradigms."""
    by_task: dict[str, list[MinimalPair]] = {}
    for pair in pairs:
        by_task.setdefault(pair.task, []).append(pair)
    return [pair for row in itertools.zip_longest(*by_task.values()) for pair in row if pair is not None]


def at_granularity(task_data: TaskData, granularity: str) -> TaskData:
    """`task_data` with phenomena as tasks (granularity=phenomenon), or unchanged."""
    check_granularity(granularity)
    if granularity == "paradigm":
        return task_data
    groups = phenomenon_groups(task_data.suite.kind, sorted(set(task_data.suite.phenomena.values())))

    def relabel(pairs: list[MinimalPair]) -> list[MinimalPair]:
        return [replace(pair, task=pair.phenomenon, phenomenon=groups[pair.phenomenon]) for pair in _interleaved(pairs)]

    suite = TaskSuite(task_data.suite.kind, relabel(task_data.suite.pairs))
    tasks = [task for task in suite.tasks if task in {task_data.suite.phenomena[t] for t in task_data.tasks}]
    split = PairSplit(relabel(task_data.split.train), relabel(task_data.split.eval), relabel(task_data.split.reserved))
    return TaskData(suite=suite, tasks=tasks, train=relabel(task_data.train), eval=relabel(task_data.eval),
                    eval_all=relabel(task_data.eval_all), split=split)


def _pooled(scores: Mapping[str, Mapping[str, float]], phenomenon_of: Mapping[str, str]) -> dict[str, dict[str, float]]:
    """Per-paradigm accuracy and margin pooled into phenomena, weighted by each paradigm's number of pairs."""
    totals: dict[str, dict[str, float]] = {}
    for paradigm, score in scores.items():
        total = totals.setdefault(phenomenon_of[paradigm], {"accuracy": 0.0, "margin": 0.0, "pairs": 0})
        pairs = int(score.get("pairs") or 1)
        total["accuracy"] += score["accuracy"] * pairs
        total["margin"] += score["margin"] * pairs
        total["pairs"] += pairs
    return {phenomenon: {"accuracy": t["accuracy"] / t["pairs"], "margin": t["margin"] / t["pairs"], "pairs": t["pairs"]}
            for phenomenon, t in totals.items()}


def phenomenon_records(records: list[TrainResults], groups: Mapping[str, str]) -> list[TrainResults]:
    """FTGD results of one copy per phenomenon, with their rows pooled from paradigms into phenomena.

    `groups` maps phenomena to their hypothesis group. A record that trained paradigms of several phenomena is
    a user error: it is no row of this matrix.
    """
    pooled = []
    for record in records:
        phenomenon_of = dict(record.phenomena)
        trained = sorted({phenomenon_of.get(task, task) for task in record.tasks_trained})
        if len(trained) != 1:
            raise GradspaceError(
                f"{record.source or 'a results record'} trained paradigms of {len(trained)} phenomena ({', '.join(trained)}); "
                f"at granularity=phenomenon each copy fine-tunes one phenomenon (task=paradigm task.name=<phenomenon>)"
            )
        before = _pooled(record.eval_before, phenomenon_of)
        after = _pooled(record.eval_after, phenomenon_of)
        pooled.append(replace(
            record,
            tasks_trained=trained,
            phenomena={phenomenon: groups.get(phenomenon, phenomenon) for phenomenon in after},
            eval_before=before,
            eval_after=after,
            transfer={task: {key: after[task][key] - before[task][key] for key in ("accuracy", "margin")} for task in after},
        ))
    return pooled
