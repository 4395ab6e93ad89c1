"""Pictures of task spaces: heatmaps ordered by phenomenon, dendrograms, and summaries over checkpoints."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; no display is needed or wanted

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.cluster import hierarchy  # noqa: E402
from scipy.spatial.distance import squareform  # noqa: E402


def _phenomenon_colours(tasks: Sequence[str], phenomena: Mapping[str, str]) -> dict[str, tuple]:
    groups = list(dict.fromkeys(phenomena[task] for task in tasks))
    cmap = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20")
    return {group: cmap(i % cmap.N) for i, group in enumerate(groups)}


def _save(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def heatmap(matrix: np.ndarray, tasks: Sequence[str], phenomena: Mapping[str, str], title: str, path: Path,
            diverging: bool = True, value_label: str = "") -> Path:
    """Tasks in the given (phenomenon) order, lines between phenomena, missing cells grey and crossed."""
    matrix = np.asarray(matrix, dtype=float)
    n = len(tasks)
    size = min(4 + 0.28 * n, 24)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    finite = matrix[np.isfinite(matrix)]
    cmap = plt.get_cmap("RdBu_r" if diverging else "viridis").with_extremes(bad="#bbbbbb")
    if diverging:
        limit = float(np.abs(finite).max()) if finite.size and np.abs(finite).max() > 0 else 1.0
        vmin, vmax = -limit, limit
    else:
        vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    for i, j in zip(*np.nonzero(~np.isfinite(matrix))):
        ax.text(j, i, "×", ha="center", va="center", fontsize=7, color="#555555")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=value_label)
    fontsize = max(4, min(9, 240 // max(n, 1)))
    ax.set_xticks(range(n), tasks, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(n), tasks, fontsize=fontsize)
    colours = _phenomenon_colours(tasks, phenomena)
    for label in [*ax.get_xticklabels(), *ax.get_yticklabels()]:
        label.set_color(colours[phenomena[label.get_text()]])
    labels = [phenomena[task] for task in tasks]
    for boundary in (i for i in range(1, n) if labels[i] != labels[i - 1]):
        ax.axhline(boundary - 0.5, color="black", linewidth=0.8)
        ax.axvline(boundary - 0.5, color="black", linewidth=0.8)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


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


def dendrogram(matrix: np.ndarray, tasks: Sequence[str], phenomena: Mapping[str, str], title: str, path: Path) -> Path:
    """Average-linkage clustering of the tasks by a similarity matrix; leaves coloured by phenomenon."""
    distance = similarity_to_distance(matrix)
    linkage = hierarchy.linkage(squareform(distance, checks=False), method="average")
    n = len(tasks)
    fig, ax = plt.subplots(figsize=(min(4 + 0.25 * n, 24), 4.5))
    with warnings.catch_warnings():  # all-equal similarities give a flat tree, which scipy warns about
        warnings.simplefilter("ignore", UserWarning)
        hierarchy.dendrogram(linkage, labels=list(tasks), ax=ax, leaf_rotation=90, color_threshold=0,
                             above_threshold_color="#444444", leaf_font_size=max(5, min(9, 240 // max(n, 1))))
    colours = _phenomenon_colours(tasks, phenomena)
    for label in ax.get_xticklabels():
        label.set_color(colours[phenomena[label.get_text()]])
    handles = [plt.Line2D([], [], marker="s", linestyle="", color=colour, label=group) for group, colour in colours.items()]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.set_ylabel("distance (max similarity − similarity)")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def checkpoint_lines(series: Mapping[str, Mapping[str, Sequence[tuple[str, float | None]]]], title: str, path: Path) -> Path:
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
    return _save(fig, path)
