"""The task-space pictures, read back from the matplotlib Figures they draw: colour limits, cell numbers, the order
and grouping of the tasks, group boundaries and names, dendrogram leaves and line-plot data, each compared with what
the test computes itself from the input matrix."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.colors import to_rgba
from matplotlib.image import imread

from gradspace.data.blimp_paradigms import BLIMP_PARADIGMS
from gradspace.probing.plots import (
    BOUNDARY_GID,
    DIAGONAL_COLOUR,
    checkpoint_lines_figure,
    dendrogram_figure,
    heatmap,
    heatmap_figure,
    similarity_to_distance,
)
from gradspace.synth.grammar import SYNTH_TASKS

pytestmark = pytest.mark.unit

TASKS = ["a1", "a2", "b1", "b2", "b3"]
PHENOMENA = {"a1": "A", "a2": "A", "b1": "B", "b2": "B", "b3": "B"}


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def block_matrix():
    labels = np.array([PHENOMENA[t] for t in TASKS])
    return np.where(labels[:, None] == labels[None, :], 0.7, 0.05)


def similarity(tasks, phenomena, within, across, seed=0):
    """A symmetric similarity with a 1.0 diagonal: `within` inside a phenomenon, `across` between, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.array([phenomena[t] for t in tasks])
    matrix = np.where(labels[:, None] == labels[None, :], within, across) + rng.uniform(-0.01, 0.01, (len(tasks),) * 2)
    matrix = (matrix + matrix.T) / 2
    np.fill_diagonal(matrix, 1.0)
    return matrix


def shuffled_blimp(seed=0):
    """The 67 paradigms in a random order, so grouping by term is the plot's work, not the input's."""
    return list(np.random.default_rng(seed).permutation(list(BLIMP_PARADIGMS)))


def read_heatmap(fig):
    """(the heatmap axes, its image, the row/column task names as drawn, the secondary axis with the group names)."""
    ax = fig.axes[0]
    (image,) = ax.images
    rows = [label.get_text() for label in ax.get_yticklabels()]
    columns = [label.get_text() for label in ax.get_xticklabels()]
    (groups_axis,) = ax.child_axes
    return ax, image, rows, columns, groups_axis


def runs(labels):
    """(label, first, last) of each run of equal consecutive labels."""
    spans = []
    for index, label in enumerate(labels):
        if spans and spans[-1][0] == label:
            spans[-1][2] = index
        else:
            spans.append([label, index, index])
    return [tuple(span) for span in spans]


def test_colour_scale_is_fitted_to_the_off_diagonal_cells():
    tasks = list(SYNTH_TASKS)
    matrix = similarity(tasks, SYNTH_TASKS, within=0.08, across=0.02)  # a real gradient space: 0.0-0.1 off the diagonal
    off_diagonal = matrix[~np.eye(len(tasks), dtype=bool)]
    assert off_diagonal.max() < 0.1 and matrix.max() == 1.0

    _, image, *_ = read_heatmap(heatmap_figure(matrix, tasks, SYNTH_TASKS, "cosine"))
    largest = np.abs(off_diagonal).max()
    assert image.get_clim() == pytest.approx((-largest, largest))  # centred on 0, the 1.0 diagonal left out
    # The strongest within-phenomenon cell gets the end colour of the scale, not the pale tint it got on a ±1 scale.
    assert image.norm(off_diagonal.max()) == pytest.approx(1.0)

    _, image, *_ = read_heatmap(heatmap_figure(np.abs(matrix), tasks, SYNTH_TASKS, "jaccard", diverging=False))
    assert image.get_clim() == pytest.approx((np.abs(off_diagonal).min(), np.abs(off_diagonal).max()))


def test_the_diagonal_is_drawn_off_the_scale_and_missing_cells_are_crossed():
    tasks = list(SYNTH_TASKS)
    matrix = similarity(tasks, SYNTH_TASKS, within=0.08, across=0.02)
    matrix[3, 7] = np.nan
    ax, image, rows, columns, _ = read_heatmap(heatmap_figure(matrix, tasks, SYNTH_TASKS, "cosine"))
    diagonal = {(patch.get_x() + 0.5, patch.get_y() + 0.5) for patch in ax.patches
                if patch.get_facecolor() == to_rgba(DIAGONAL_COLOUR)}
    assert diagonal == {(i, i) for i in range(len(tasks))}
    crosses = {(round(t.get_position()[1]), round(t.get_position()[0])) for t in ax.texts if t.get_text() == "×"}
    assert crosses == {(rows.index(tasks[3]), columns.index(tasks[7]))}
    assert bool(np.ma.getmaskarray(image.get_array())[rows.index(tasks[3]), columns.index(tasks[7])])


def test_cells_show_their_values_up_to_15_tasks_and_not_beyond():
    tasks = list(SYNTH_TASKS)[::-1]  # given out of phenomenon order, so the plot reorders rows and columns
    rng = np.random.default_rng(1)
    matrix = rng.uniform(-0.1, 0.1, (len(tasks), len(tasks)))  # not symmetric: a transposed cell would show
    np.fill_diagonal(matrix, 1.0)
    ax, _, rows, columns, _ = read_heatmap(heatmap_figure(matrix, tasks, SYNTH_TASKS, "transfer"))
    numbers = [t for t in ax.texts if t.get_text() != "×"]
    assert len(numbers) == len(tasks) ** 2
    for text in numbers:
        x, y = text.get_position()
        expected = matrix[tasks.index(rows[round(y)]), tasks.index(columns[round(x)])]
        decimals = len(text.get_text().split(".")[1])
        assert decimals >= 3  # a 0.0-0.1 scale needs the third decimal to tell cells apart
        assert float(text.get_text()) == pytest.approx(expected, abs=0.5 * 10**-decimals), text.get_text()

    for n, expected_texts in ((15, 15 * 15), (16, 0)):
        many = [f"t{i}" for i in range(n)]
        figure = heatmap_figure(np.eye(n), many, {task: "P" for task in many}, f"{n} tasks")
        assert len(figure.axes[0].texts) == expected_texts


def test_67_paradigms_are_grouped_by_their_13_terms_with_boundaries_and_names():
    tasks = shuffled_blimp()
    matrix = similarity(tasks, BLIMP_PARADIGMS, within=0.06, across=0.005)
    ax, image, rows, columns, groups_axis = read_heatmap(heatmap_figure(matrix, tasks, BLIMP_PARADIGMS, "67 paradigms"))

    assert rows == columns and sorted(rows) == sorted(BLIMP_PARADIGMS)
    spans = runs([BLIMP_PARADIGMS[task] for task in rows])
    assert len(spans) == len(set(BLIMP_PARADIGMS.values())) == 13  # each term's paradigms in one block
    # The cells moved with their labels: the drawn cell (i, j) is the input's (row task, column task).
    index = [tasks.index(task) for task in rows]
    assert np.array_equal(np.asarray(image.get_array()), matrix[np.ix_(index, index)])

    starts = sorted(first - 0.5 for _, first, _ in spans[1:])
    boundaries = [line for line in ax.lines if line.get_gid() == BOUNDARY_GID]
    horizontal = sorted(line.get_ydata()[0] for line in boundaries if line.get_ydata()[0] == line.get_ydata()[1])
    vertical = sorted(line.get_xdata()[0] for line in boundaries if line.get_xdata()[0] == line.get_xdata()[1])
    assert horizontal == vertical == starts

    assert [label.get_text() for label in groups_axis.get_xticklabels()] == [term for term, _, _ in spans]
    assert list(groups_axis.get_xticks()) == [(first + last) / 2 for _, first, last in spans]
    colour = {}
    for label in ax.get_yticklabels():
        colour.setdefault(BLIMP_PARADIGMS[label.get_text()], set()).add(label.get_color())
    assert all(len(colours) == 1 for colours in colour.values())  # one colour per term ...
    assert len({colours.pop() for colours in colour.values()}) == 13  # ... and 13 different ones


def test_heatmap_writes_a_png(tmp_path):
    path = heatmap(block_matrix(), TASKS, PHENOMENA, "transfer", tmp_path / "sub" / "h.png")
    assert imread(path).ndim == 3


def test_distance_from_similarity_is_a_metric_like_matrix():
    matrix = block_matrix()
    matrix[0, 1] = np.nan
    distance = similarity_to_distance(matrix)
    assert np.allclose(distance, distance.T) and np.all(np.diag(distance) == 0) and np.all(distance >= 0)
    # Same-phenomenon tasks are closer than tasks of different phenomena.
    assert distance[2, 3] < distance[0, 2]
    assert np.isfinite(distance).all()


def test_dendrogram_puts_each_phenomenon_under_one_branch():
    tasks = shuffled_blimp(seed=2)
    matrix = similarity(tasks, BLIMP_PARADIGMS, within=0.06, across=0.005)
    ax = dendrogram_figure(matrix, tasks, BLIMP_PARADIGMS, "67 paradigms").axes[0]
    leaves = [label.get_text() for label in ax.get_xticklabels()]
    assert sorted(leaves) == sorted(tasks)
    assert len(runs([BLIMP_PARADIGMS[leaf] for leaf in leaves])) == 13
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert sorted(legend) == sorted(set(BLIMP_PARADIGMS.values()))


def test_checkpoint_lines_draw_each_model_over_its_revisions_with_gaps():
    series = {"cosine (within − across)": {"synth-1m": [("step200", 0.5), ("main", 0.6)], "synth-4m": [("step200", None), ("main", 0.7)]},
              "transfer (within − across)": {"synth-1m": [("step200", 0.1), ("main", 0.2)]}}
    fig = checkpoint_lines_figure(series, "over checkpoints")
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == list(series)
    for ax, (measure, lines) in zip(panels, series.items()):
        assert [label.get_text() for label in ax.get_xticklabels()] == ["step200", "main"]
        drawn = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.lines}
        assert set(drawn) == set(lines)
        for model, points in lines.items():
            xs, ys = drawn[model]
            assert xs == [["step200", "main"].index(revision) for revision, _ in points]
            assert ys == pytest.approx([np.nan if value is None else value for _, value in points], nan_ok=True)
