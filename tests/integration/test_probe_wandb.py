"""The probe's trackers: W&B images and matrix tables in one offline run, summary scalars in any `_target_` logger
(no model needed)."""

import pytest
from omegaconf import OmegaConf

from gradspace.probing.plots import heatmap
from gradspace.probing.report import log_to_trackers
from gradspace.probing.results import ProbeResults

pytestmark = pytest.mark.integration


def probe_results(**values) -> ProbeResults:
    neutral = dict(status="ok", granularity="paradigm", tasks=[], phenomena={}, checkpoints=[], problems=[],
                   config={"model": {"name": "m"}}, summary=[], trends=[], files={}, seconds=None)
    return ProbeResults(**{**neutral, **values})


def test_images_and_tables_are_logged_offline(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    tasks, phenomena = ["a", "b"], {"a": "P", "b": "Q"}
    png = heatmap([[1.0, 0.2], [0.2, 1.0]], tasks, phenomena, "t", tmp_path / "h.png")
    results = probe_results(
        checkpoints=[{"checkpoint": "m@main", "tasks": tasks,
                      "spaces": {"gradient_diff_cosine": {"matrix": [[1.0, 0.2], [0.2, None]]}}}],
        summary=[{"checkpoint": "m@main", "space": "gradient_diff_cosine", "within": None, "across": 0.2,
                  "within_minus_across": None, "spearman": 0.25}],
    )
    cfg = OmegaConf.create({"logger": {"wandb": {"project": "gradspace-test", "entity": None, "mode": "auto", "name": None,
                                                 "group": None, "tags": []}},
                            "paths": {"output_dir": str(tmp_path)}, "model": {"name": "m"}})
    run_dir = log_to_trackers(cfg, results, {"heatmap/m@main/gradient_diff_cosine": str(png)})
    assert run_dir is not None
    offline_runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1
    media = list(offline_runs[0].rglob("*.png"))
    tables = list(offline_runs[0].rglob("*.table.json"))
    assert media and len(tables) == 2  # the matrix and the summary
    assert log_to_trackers(OmegaConf.create({"logger": {"wandb": None}, "model": {"name": "m"}}), results, {}) is None


def test_summary_scalars_go_to_a_target_logger(tmp_path):
    import csv

    results = probe_results(summary=[{"checkpoint": "m@main", "space": "transfer_accuracy", "within_minus_across": 0.125,
                                      "spearman": -0.5}])
    cfg = OmegaConf.create({"logger": {"csv": {"_target_": "lightning.pytorch.loggers.CSVLogger", "save_dir": str(tmp_path), "name": "csv", "version": ""}},
                            "paths": {"output_dir": str(tmp_path)}, "model": {"name": "m"}})
    assert log_to_trackers(cfg, results, {}) is None  # no W&B run
    (row,) = list(csv.DictReader((tmp_path / "csv" / "metrics.csv").open()))
    assert float(row["probe/m@main/transfer_accuracy/within_minus_across"]) == 0.125
    assert float(row["probe/m@main/transfer_accuracy/spearman"]) == -0.5
