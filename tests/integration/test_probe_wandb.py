"""The probe's W&B logging: images and matrix tables in one offline run (no model needed)."""

import pytest
from omegaconf import OmegaConf

from gradspace.probing.plots import heatmap
from gradspace.probing.report import log_to_wandb

pytestmark = pytest.mark.integration


def test_images_and_tables_are_logged_offline(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    tasks, phenomena = ["a", "b"], {"a": "P", "b": "Q"}
    png = heatmap([[1.0, 0.2], [0.2, 1.0]], tasks, phenomena, "t", tmp_path / "h.png")
    results = {
        "config": {"model": {"name": "m"}},
        "checkpoints": [{"checkpoint": "m@main", "tasks": tasks,
                         "spaces": {"gradient_diff_cosine": {"matrix": [[1.0, 0.2], [0.2, None]]}}}],
        "summary": [{"checkpoint": "m@main", "space": "gradient_diff_cosine", "within": None, "across": 0.2}],
    }
    cfg = OmegaConf.create({"logger": {"wandb": {"project": "gradspace-test", "entity": None, "mode": "auto", "name": None,
                                                 "group": None, "tags": []}},
                            "paths": {"output_dir": str(tmp_path)}, "model": {"name": "m"}})
    run_dir = log_to_wandb(cfg, results, {"heatmap/m@main/gradient_diff_cosine": str(png)})
    assert run_dir is not None
    offline_runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1
    media = list(offline_runs[0].rglob("*.png"))
    tables = list(offline_runs[0].rglob("*.table.json"))
    assert media and len(tables) == 2  # the matrix and the summary
    assert log_to_wandb(OmegaConf.create({"logger": {"wandb": None}, "model": {"name": "m"}}), results, {}) is None
