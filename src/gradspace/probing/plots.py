"""Pictures of task spaces: heatmaps grouped by phenomenon, dendrograms, and summaries over checkpoints.

Each picture has a `*_figure` function that draws it and returns the matplotlib Figure (what the tests read back)
and a function of the plain name that writes it to a PNG and returns the path.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; no display is needed or wanted

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from scipy.cluster import hierarchy  # noqa: E402
from scipy.spatial.distance import squareform  # noqa: E402

# Above this many tasks the cells are too small for their numbers (15 is the 13 BLiMP terms with room to spare).
ANNOTATE_MAX_TASKS = 15
BOUNDARY_GID = "phenomenon-boundary"  # the gid of the lines between phenomena, so they can be told from other lines
DIAGONAL_COLOUR = "#e6e6e6"  # a task against itself: off the colour scale, which is fitted to the other cells
MISSING_COLOUR = "#bbbbbb"
# Text colours for up to 18 phenomena (BLiMP has 13 terms): tab10, then Dark2; both dark enough to read on white,
# unlike the light half of tab20.
PALETTE = (*plt.get_cmap("tab10").colors, *plt.get_cmap("Dark2").colors)


def _phenomenon_colours(tasks: Sequence[str], phenomena: Mapping[str, str]) -> dict[str, tuple]:
    groups = list(dict.fromkeys(phenomena[task] for task in tasks))
    return {group: PALETTE[i % len(PALETTE)] for i, group in enumerate(groups)}


def _label_fontsize(extent_inches: float, n: int) -> int:
    """A font that fits the space one task gets along an axis."""
    return max(4, min(9, int(0.3 * 72 * extent_inches / max(n, 1))))


def save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def grouped_order(tasks: Sequence[str], phenomena: Mapping[str, str]) -> list[int]:
    """Indices of `tasks` with each phenomenon's tasks together: phenomena in order of first appearance, tasks in
    their given order within one."""
    groups = list(dict.fromkeys(phenomena[task] for task in tasks))
    return sorted(range(len(tasks)), key=lambda i: (groups.index(phenomena[tasks[i]]), i))


def colour_limits(matrix: np.ndarray, diverging: bool) -> tuple[float, float]:
    """The colour range of the finite off-diagonal cells: a self-similarity of 1.0 on the diagonal would otherwise
    wash real off-diagonals of 0.0–0.1 out to white. Diverging scales stay centred on 0."""
    matrix = np.asarray(matrix, dtype=float)
    values = matrix[np.isfinite(matrix) & ~np.eye(len(matrix), dtype=bool)]
    if values.size == 0:
        return (-1.0, 1.0) if diverging else (0.0, 1.0)
    if diverging:
        limit = float(np.abs(values).max()) or 1.0
        return -limit, limit
    low, high = float(values.min()), float(values.max())
    return low, (high if high > low else low + 1.0)


def _decimals(vmin: float, vmax: float) -> int:
    """Two significant digits for the largest magnitude on the scale, and never fewer than two decimals."""
    largest = max(abs(vmin), abs(vmax))
    return 2 if largest >= 0.1 else min(4, 1 - math.floor(math.log10(largest)))


def _group_spans(labels: Sequence[str]) -> list[tuple[str, int, int]]:
    """(phenomenon, first, last) index of each run of equal labels."""
    spans: list[tuple[str, int, int]] = []
    for index, label in enumerate(labels):
        if spans and spans[-1][0] == label:
            spans[-1] = (label, spans[-1][1], index)
        else:
            spans.append((label, index, index))
    return spans


def heatmap_figure(matrix: np.ndarray, tasks: Sequence[str], phenomena: Mapping[str, str], title: str,
                   diverging: bool = True, value_label: str = "") -> Figure:
    """Tasks grouped by phenomenon (lines between groups, their names on top, tick labels in the group's colour);
    colours fitted to the off-diagonal cells, the diagonal in a neutral grey; the values in the cells up to
    ANNOTATE_MAX_TASKS tasks; missing cells darker grey and crossed."""
    order = grouped_order(tasks, phenomena)
    tasks = [tasks[i] for i in order]
    matrix = np.asarray(matrix, dtype=float)[np.ix_(order, order)]
    n = len(tasks)
    size = min(4 + 0.28 * n, 24)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    vmin, vmax = colour_limits(matrix, diverging)
    cmap = plt.get_cmap("RdBu_r" if diverging else "viridis").with_extremes(bad=MISSING_COLOUR)
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=f"{value_label} (off-diagonal cells)".strip())
    decimals = _decimals(vmin, vmax)
    for i, j in np.ndindex(matrix.shape):
        value = matrix[i, j]
        if not np.isfinite(value):
            ax.text(j, i, "×", ha="center", va="center", fontsize=7, color="#555555")
            continue
        dark = False
        if i == j:
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor=DIAGONAL_COLOUR, edgecolor="none"))
        else:
            red, green, blue, _ = cmap(image.norm(value))
            dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
        if n <= ANNOTATE_MAX_TASKS:
            ax.text(j, i, f"{value:.{decimals}f}", ha="center", va="center", fontsize=7, color="white" if dark else "black")
    fontsize = _label_fontsize(size, n)
    ax.set_xticks(range(n), tasks, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(n), tasks, fontsize=fontsize)
    colours = _phenomenon_colours(tasks, phenomena)
    for label in [*ax.get_xticklabels(), *ax.get_yticklabels()]:
        label.set_color(colours[phenomena[label.get_text()]])
    spans = _group_spans([phenomena[task] for task in tasks])
    for _, first, _ in spans[1:]:
        ax.axhline(first - 0.5, color="black", linewidth=0.8, gid=BOUNDARY_GID)
        ax.axvline(first - 0.5, color="black", linewidth=0.8, gid=BOUNDARY_GID)
    groups_axis = ax.secondary_xaxis("top")
    groups_axis.set_xticks([(first + last) / 2 for _, first, last in spans], [name for name, _, _ in spans],
                           rotation=35, ha="left", rotation_mode="anchor", fontsize=max(fontsize, 8))
    groups_axis.tick_params(length=0)
    for label, (name, _, _) in zip(groups_axis.get_xticklabels(), spans):
        label.set_color(colours[name])
    ax.set_title(title, fontsize=10)
    return fig


def heatmap(matrix: np.ndarray, tasks: Sequence[str], phenomena: Mapping[str, str], title: str, path: Path,
            diverging: bool = True, value_label: str = "") -> Path:
    return save(heatmap_figure(matrix, tasks, phenomena, title, diverging, value_label), path)


def similarity_to_distance(matrix: np.ndarray) -> np.ndarray:
    """A symmetric, zero-diagonal distance from a similarity: max − (S + Sᵀ)/2; missing cells get the mean."""
    matrix = np.asarray(matrix, dtype=float)
    symmetric = (matrix + matrix.T) / 2
    off = ~np.eye(len(matrix), dtype=bool)
    finite = symmetric[off & np.isfinite(symmetric)]
    fill = float(finite.mean()) if finite.size else 0.0
    symmetric = np.where(np.isfinite(symmetric), symmetric, fill)
    top = float(symmetric[off].max()) if off.any() else 0.0
    distance = np.clip(top - symmetric, 0.0, None)
    np.fill_diagonal(distance, 0.0)
    return distance


def dendrogram_figure(matrix: np.ndarray, tasks: Sequence[str], phenomena: Mapping[str, str], title: str) -> Figure:
    """Average-linkage clustering of the tasks by a similarity matrix; leaves coloured by phenomenon."""
    distance = similarity_to_distance(matrix)
    linkage = hierarchy.linkage(squareform(distance, checks=False), method="average")
    n = len(tasks)
    width = min(4 + 0.25 * n, 24)
    fig, ax = plt.subplots(figsize=(width, 4.5))
    with warnings.catch_warnings():  # all-equal similarities give a flat tree, which scipy warns about
        warnings.simplefilter("ignore", UserWarning)
        hierarchy.dendrogram(linkage, labels=list(tasks), ax=ax, leaf_rotation=90, color_threshold=0,
                             above_threshold_color="#444444", leaf_font_size=_label_fontsize(width, n))
    colours = _phenomenon_colours(tasks, phenomena)
    for label in ax.get_xticklabels():
        label.set_color(colours[phenomena[label.get_text()]])
    handles = [plt.Line2D([], [], marker="s", linestyle="", color=colour, label=group) for group, colour in colours.items()]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.set_ylabel("distance (max similarity − similarity)")
    ax.set_title(title, fontsize=10)
    return fig


def dendrogram(matrix: np.ndarray, tasks: Sequence[str], phenomena: Mapping[str, str], title: str, path: Path) -> Path:
    return save(dendrogram_figure(matrix, tasks, phenomena, title), path)


def checkpoint_lines_figure(series: Mapping[str, Mapping[str, Sequence[tuple[str, float | None]]]], title: str) -> Figure:
    """One panel per measure; in each, a line per model over its checkpoints (in the order given).

    `series[measure][model]` is a list of (revision, value); a None value leaves a gap.
    """
    measures = list(series)
    ncols = min(len(measures), 2 if len(measures) == 4 else 3)
    nrows = -(-len(measures) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.6 * nrows), squeeze=False)
    for ax in axes.flat[len(measures):]:
        ax.set_visible(False)
    for ax, measure in zip(axes.flat, measures):
        revisions: list[str] = []
        for points in series[measure].values():
            revisions.extend(revision for revision, _ in points if revision not in revisions)
        for model, points in series[measure].items():
            xs = [revisions.index(revision) for revision, _ in points]
            ys = [np.nan if value is None else value for _, value in points]
            ax.plot(xs, ys, marker="o", label=model)
        ax.set_xticks(range(len(revisions)), revisions, rotation=45, fontsize=8)
        ax.set_title(measure, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes.flat[: len(measures)]:
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def checkpoint_lines(series: Mapping[str, Mapping[str, Sequence[tuple[str, float | None]]]], title: str, path: Path) -> Path:
    return save(checkpoint_lines_figure(series, title), path)
