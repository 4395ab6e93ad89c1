import numpy as np
import pytest
from matplotlib.image import imread

from gradspace.probing.plots import checkpoint_lines, dendrogram, heatmap, similarity_to_distance

pytestmark = pytest.mark.unit

TASKS = ["a1", "a2", "b1", "b2", "b3"]
PHENOMENA = {"a1": "A", "a2": "A", "b1": "B", "b2": "B", "b3": "B"}


def block_matrix():
    labels = np.array([PHENOMENA[t] for t in TASKS])
    return np.where(labels[:, None] == labels[None, :], 0.7, 0.05)


def test_heatmap_writes_a_png_with_missing_cells(tmp_path):
    matrix = block_matrix()
    matrix[2] = np.nan  # a failed fine-tuning job
    path = heatmap(matrix, TASKS, PHENOMENA, "transfer", tmp_path / "sub" / "h.png")
    image = imread(path)
    assert image.shape[0] > 100 and image.shape[1] > 100
    jaccard = heatmap(np.abs(block_matrix()), TASKS, PHENOMENA, "jaccard", tmp_path / "j.png", diverging=False)
    assert jaccard.stat().st_size > 1000


def test_distance_from_similarity_is_a_metric_like_matrix():
    matrix = block_matrix()
    matrix[0, 1] = np.nan
    distance = similarity_to_distance(matrix)
    assert np.allclose(distance, distance.T) and np.all(np.diag(distance) == 0) and np.all(distance >= 0)
    # Same-phenomenon tasks are closer than tasks of different phenomena.
    assert distance[2, 3] < distance[0, 2]
    assert np.isfinite(distance).all()


def test_dendrogram_and_checkpoint_lines(tmp_path):
    assert dendrogram(block_matrix(), TASKS, PHENOMENA, "d", tmp_path / "d.png").is_file()
    series = {"cosine (within − across)": {"synth-1m": [("step200", 0.5), ("main", 0.6)], "synth-4m": [("step200", None), ("main", 0.7)]},
              "transfer (within − across)": {"synth-1m": [("step200", 0.1), ("main", 0.2)]}}
    assert checkpoint_lines(series, "over checkpoints", tmp_path / "c.png").stat().st_size > 1000
