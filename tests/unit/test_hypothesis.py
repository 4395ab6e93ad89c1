import numpy as np
import pytest
from scipy.stats import spearmanr

from gradspace.errors import GradspaceError
from gradspace.probing.hypothesis import compare_with_hypothesis, hypothesis_matrix, offdiagonal_mask

pytestmark = pytest.mark.unit

TASKS = ["a1", "a2", "a3", "b1", "b2", "c1", "c2"]
PHENOMENA = {"a1": "A", "a2": "A", "a3": "A", "b1": "B", "b2": "B", "c1": "C", "c2": "C"}


def block_space(within: float, across: float, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    hypothesis = hypothesis_matrix(TASKS, PHENOMENA)
    rng = np.random.default_rng(seed)
    space = np.where(hypothesis == 1, within, across) + noise * rng.standard_normal(hypothesis.shape)
    return (space + space.T) / 2


def test_hypothesis_matrix_marks_same_phenomenon_pairs():
    h = hypothesis_matrix(["x", "y", "z"], {"x": "P", "y": "Q", "z": "P"})
    assert h.tolist() == [[1, 0, 1], [0, 1, 0], [1, 0, 1]]


def test_hypothesis_matrix_names_tasks_without_a_phenomenon():
    with pytest.raises(GradspaceError, match="zz"):
        hypothesis_matrix(["x", "zz"], {"x": "P"})


def test_offdiagonal_mask_counts():
    assert offdiagonal_mask(4, symmetric=True).sum() == 6
    assert offdiagonal_mask(4, symmetric=False).sum() == 12


def test_block_structured_space_matches_the_hypothesis_significantly():
    comparison = compare_with_hypothesis(block_space(0.65, 0.05, noise=0.05), TASKS, PHENOMENA, symmetric=True, n_permutations=500)
    assert comparison.spearman > 0.7
    # 7 tasks in groups of 3, 2, 2 have only 105 distinct labelings, so p cannot go much below 1/105.
    assert comparison.p_value < 0.03
    assert comparison.n_within == 3 + 1 + 1 and comparison.n_across == 21 - 5
    assert comparison.within_mean == pytest.approx(0.65, abs=0.05)
    assert comparison.across_mean == pytest.approx(0.05, abs=0.05)


def test_spearman_equals_scipy_on_the_upper_triangle():
    space = block_space(0.3, 0.1, noise=0.3, seed=3)
    comparison = compare_with_hypothesis(space, TASKS, PHENOMENA, symmetric=True, n_permutations=10)
    iu = np.triu_indices(len(TASKS), k=1)
    expected = spearmanr(space[iu], hypothesis_matrix(TASKS, PHENOMENA)[iu]).statistic
    assert comparison.spearman == pytest.approx(expected)


def test_unstructured_space_is_not_significant():
    rng = np.random.default_rng(1)
    p_values = []
    for seed in range(20):
        space = rng.standard_normal((7, 7))
        p_values.append(compare_with_hypothesis(space, TASKS, PHENOMENA, symmetric=False, n_permutations=200, seed=seed).p_value)
    # Under the null the p-value is roughly uniform: most are large, few are tiny.
    assert np.mean(np.array(p_values) < 0.05) <= 0.2
    assert np.median(p_values) > 0.2


def test_reversed_structure_has_negative_correlation_and_large_p():
    comparison = compare_with_hypothesis(block_space(0.0, 0.8, noise=0.01), TASKS, PHENOMENA, symmetric=True, n_permutations=200)
    assert comparison.spearman < -0.7 and comparison.p_value > 0.9


def test_asymmetric_matrix_uses_both_triangles_and_skips_missing_cells():
    space = block_space(1.0, 0.0)
    space[0, 1] = np.nan  # a missing transfer cell (failed job)
    space[1, 0] = -5.0  # only in the lower triangle: counts for an asymmetric matrix
    comparison = compare_with_hypothesis(space, TASKS, PHENOMENA, symmetric=False, n_permutations=50)
    assert comparison.n_within == 2 * 5 - 1
    assert comparison.within_mean == pytest.approx((8 * 1.0 - 5.0) / 9)


def test_constant_hypothesis_gives_no_correlation_and_says_why():
    singletons = {task: task for task in TASKS}
    comparison = compare_with_hypothesis(block_space(1, 0), TASKS, singletons, symmetric=True)
    assert comparison.spearman is None and comparison.p_value is None
    assert comparison.within_mean is None and comparison.across_mean is not None
    assert "constant" in comparison.note


def test_fewer_than_two_tasks_is_a_user_error():
    with pytest.raises(GradspaceError, match="at least 2 tasks"):
        compare_with_hypothesis(np.ones((1, 1)), ["a1"], PHENOMENA, symmetric=True)


def test_per_phenomenon_means():
    space = block_space(0.0, 0.0)
    space[0, 1] = space[1, 0] = 0.9  # a1-a2
    space[0, 3] = space[3, 0] = 0.3  # a1-b1
    comparison = compare_with_hypothesis(space, TASKS, PHENOMENA, symmetric=True, n_permutations=10)
    assert comparison.within_by_phenomenon["A"] == pytest.approx(0.9 / 3)
    assert comparison.across_by_phenomenon["A"] == pytest.approx(0.3 / (3 * 4))
    assert comparison.across_by_phenomenon["B"] == pytest.approx(0.3 / (2 * 5))
    assert comparison.within_by_phenomenon["C"] == 0.0
