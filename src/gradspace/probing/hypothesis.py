"""The hypothesis task space (same phenomenon = 1, else 0) and how well a measured space agrees with it.

A measured space is a tasks × tasks matrix (transfer, gradient cosine, top-k overlap). Only off-diagonal cells
count: all of them for an asymmetric matrix (transfer: row = trained task, column = evaluated task), the upper
triangle for a symmetric one. Missing cells (NaN, e.g. a failed fine-tuning job) are left out.

Significance is a Mantel-style permutation test: the phenomenon labels are shuffled over the tasks (group sizes
stay the same), which keeps the dependence between cells that share a task that a plain Spearman p-value ignores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import numpy as np
from scipy.stats import rankdata

from gradspace.errors import GradspaceError


def phenomenon_of_each(tasks: Sequence[str], phenomena: Mapping[str, str]) -> np.ndarray:
    """The phenomenon of every task, in order; a task without one is a user error."""
    missing = [task for task in tasks if task not in phenomena]
    if missing:
        raise GradspaceError(f"no phenomenon known for task(s) {', '.join(missing)}; every task needs a phenomenon label")
    return np.array([phenomena[task] for task in tasks], dtype=object)


def hypothesis_matrix(tasks: Sequence[str], phenomena: Mapping[str, str]) -> np.ndarray:
    """1.0 where two tasks belong to the same phenomenon, else 0.0 (the diagonal is 1)."""
    labels = phenomenon_of_each(tasks, phenomena)
    return (labels[:, None] == labels[None, :]).astype(float)


def within_minus_across(within: float | None, across: float | None) -> float | None:
    """How much more similar same-phenomenon tasks are than others; None where either mean is undefined."""
    return None if within is None or across is None else within - across


def offdiagonal_mask(n: int, symmetric: bool) -> np.ndarray:
    """The cells a comparison uses: i < j for a symmetric matrix, i != j otherwise."""
    rows, cols = np.indices((n, n))
    return rows < cols if symmetric else rows != cols


@dataclass
class HypothesisComparison:
    """How a measured space lines up with same-phenomenon = 1.

    `spearman` and `p_value` are None when the hypothesis is constant over the usable cells (every task in its own
    phenomenon, or all in one), where no correlation is defined; `note` then says why.
    """

    spearman: float | None
    p_value: float | None  # one-sided: P(rho under shuffled labels >= observed rho), with the +1 correction
    n_permutations: int
    within_mean: float | None  # mean similarity over same-phenomenon pairs of distinct tasks
    across_mean: float | None
    n_within: int  # usable cells
    n_across: int
    # Per phenomenon: mean over pairs of its own tasks, and over pairs with one task inside and one outside it.
    within_by_phenomenon: dict[str, float | None] = field(default_factory=dict)
    across_by_phenomenon: dict[str, float | None] = field(default_factory=dict)
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _pearson_rows(x: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Pearson correlation of vector `x` with each row of `ys`."""
    xc = x - x.mean()
    yc = ys - ys.mean(axis=1, keepdims=True)
    denominator = np.sqrt((xc**2).sum()) * np.sqrt((yc**2).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (yc @ xc) / denominator


def compare_with_hypothesis(
    matrix: np.ndarray,
    tasks: Sequence[str],
    phenomena: Mapping[str, str],
    symmetric: bool,
    n_permutations: int = 1000,
    seed: int = 0,
) -> HypothesisComparison:
    """Spearman correlation between a measured space and the hypothesis, a permutation p-value, and the
    within- vs across-phenomenon means."""
    matrix = np.asarray(matrix, dtype=float)
    n = len(tasks)
    if matrix.shape != (n, n):
        raise ValueError(f"matrix of shape {matrix.shape} does not match {n} tasks")
    if n < 2:
        raise GradspaceError(f"a task space needs at least 2 tasks, got {n}; select more tasks")
    labels = phenomenon_of_each(tasks, phenomena)
    usable = offdiagonal_mask(n, symmetric) & np.isfinite(matrix)
    rows, cols = np.nonzero(usable)
    values = matrix[rows, cols]
    same = hypothesis_matrix(tasks, phenomena)[rows, cols]
    n_within, n_across = int(same.sum()), int(len(same) - same.sum())
    within_mean = float(values[same == 1].mean()) if n_within else None
    across_mean = float(values[same == 0].mean()) if n_across else None

    def mean_or_none(selected: np.ndarray) -> float | None:
        return float(values[selected].mean()) if selected.any() else None

    within_by, across_by = {}, {}
    for group in dict.fromkeys(labels.tolist()):
        inside_row, inside_col = labels[rows] == group, labels[cols] == group
        within_by[group] = mean_or_none(inside_row & inside_col)
        across_by[group] = mean_or_none(inside_row != inside_col)

    def result(spearman=None, p_value=None, note=""):
        return HypothesisComparison(spearman, p_value, n_permutations if spearman is not None else 0,
                                    within_mean, across_mean, n_within, n_across, within_by, across_by, note)

    if n_within == 0 or n_across == 0:
        return result(note="the hypothesis is constant over these tasks (need two tasks of one phenomenon and two phenomena)")
    ranks = rankdata(values)
    if np.ptp(ranks) == 0:
        return result(note="the measured space is constant over these tasks")
    # Spearman with a binary variable is the Pearson correlation of the value ranks with the 0/1 labels:
    # the hypothesis's tied ranks are an affine function of it.
    observed = float(_pearson_rows(ranks, same[None, :])[0])
    rng = np.random.default_rng(seed)
    permuted = labels[np.stack([rng.permutation(n) for _ in range(n_permutations)])]  # [permutations, tasks]
    null = _pearson_rows(ranks, (permuted[:, rows] == permuted[:, cols]).astype(float))
    null = np.where(np.isfinite(null), null, 0.0)
    p_value = float((1 + np.sum(null >= observed - 1e-12)) / (1 + n_permutations))
    return result(spearman=observed, p_value=p_value)
