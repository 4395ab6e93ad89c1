"""probe.py's run() end to end on a tiny synthetic model: in-process transfer, gradient spaces, plots, results.json,
the same transfer numbers from a sweep directory, and the user errors."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from gradspace.errors import GradspaceError
from gradspace.probing.run import run

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CONF = Path(__file__).resolve().parents[2] / "conf"
TINY_MODEL = {
    "name": "synth-tiny", "source": "synth", "revision": "main", "trust_remote_code": False, "dtype": "float32",
    "world": {"seed": 0, "n_train_sentences": 1500, "n_heldout_sentences": 80, "pairs_per_task": 30},
    "pretrain": {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64,
                 "block_size": 32, "batch_size": 8, "steps": 20, "lr": 5.0e-3, "warmup_steps": 2,
                 "checkpoint_steps": [10, 20], "seed": 0},
}
TASKS = ["anaphor_gender", "anaphor_number", "det_noun", "number_noun"]  # two phenomena, two tasks each


def probe_config(tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="probe", overrides=[
            "logger=none", f"paths.output_dir={tmp_path / 'out'}", f"paths.cache_dir={tmp_path.parent / 'cache'}",
            "revisions=[step10,main]", "progress=false", f"task.select.synth=[{','.join(TASKS)}]",
            "transfer.train_overrides=['ftgd.max_steps=2','ftgd.batch_size=4','heldout.max_sentences=20','data.max_eval_pairs_per_task=6']",
            "gradient.max_pairs_per_task=8", "gradient.sketch_dim=512", "hypothesis.n_permutations=50",
            "data.max_eval_pairs_per_task=6", *overrides,
        ])
    with open_dict(cfg):
        cfg.model = OmegaConf.create(TINY_MODEL)
    return cfg


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("probe")
    return tmp_path, run(probe_config(tmp_path))


def test_results_cover_every_checkpoint_and_space(probed):
    tmp_path, results = probed
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["status"] == "ok" and saved["tasks"] == TASKS
    assert [entry["checkpoint"] for entry in saved["checkpoints"]] == ["synth-tiny@step10", "synth-tiny@main"]
    assert [entry["step"] for entry in saved["checkpoints"]] == [10, 20]
    for entry in saved["checkpoints"]:
        assert {"transfer_accuracy", "transfer_margin", "gradient_diff_cosine", "gradient_diff_jaccard",
                "gradient_lm_cosine", "gradient_lm_jaccard"} <= set(entry["spaces"])
        cosine = np.array(entry["spaces"]["gradient_diff_cosine"]["matrix"], dtype=float)
        assert cosine.shape == (4, 4) and np.allclose(np.diag(cosine), 1.0) and np.allclose(cosine, cosine.T)
        assert "layer0.attention" in entry["spaces"]["gradient_diff_cosine"]["levels"]
        hypothesis = entry["spaces"]["gradient_diff_cosine"]["hypothesis"]
        assert hypothesis["n_within"] == 2 and hypothesis["n_across"] == 4 and hypothesis["spearman"] is not None
        transfer = np.array(entry["spaces"]["transfer_accuracy"]["matrix"], dtype=float)
        assert transfer.shape == (4, 4) and np.isfinite(transfer).all()
        assert entry["transfer"]["missing_rows"] == []
        # The checkpoint's own accuracy equals the "before" evaluation of every fine-tuning run made from it.
        before = json.loads((tmp_path / "out" / entry["transfer"]["results_files"][0]).read_text())["eval_before"]  # paths are relative to the run
        assert set(entry["evaluation"]["tasks"]) == set(TASKS)
        for task in TASKS:
            assert entry["evaluation"]["tasks"][task]["accuracy"] == pytest.approx(before[task]["accuracy"])
    assert {row["space"] for row in saved["summary"]} >= {"transfer_accuracy", "gradient_diff_cosine"}
    assert saved["trends"][0]["revisions"] == ["step10", "main"]


def test_same_config_writes_identical_results_and_timings_apart(probed):
    tmp_path, _ = probed
    first = (tmp_path / "out" / "results.json").read_text()
    run(probe_config(tmp_path))
    assert (tmp_path / "out" / "results.json").read_text() == first and "seconds" not in first
    timings = json.loads((tmp_path / "out" / "timings.json").read_text())
    assert timings["seconds"] > 0 and all(entry["evaluation"]["pairs_per_second"] > 0 for entry in timings["checkpoints"])


def test_plots_are_written(probed):
    _, results = probed
    files = results.files
    assert Path(files["checkpoints"]).is_file()
    assert Path(files["heatmap/synth-tiny@main/gradient_diff_cosine"]).is_file()
    assert Path(files["dendrogram/synth-tiny@step10/transfer_accuracy"]).is_file()
    assert all(Path(path).suffix == ".png" for path in files.values())


def test_each_transfer_row_is_a_train_results_file_with_the_matrix_numbers(probed):
    tmp_path, results = probed
    main = results.checkpoints[1]
    matrix = main["spaces"]["transfer_accuracy"]["matrix"]
    for row, task in enumerate(TASKS):
        record = json.loads((tmp_path / "out" / "transfer" / "synth-tiny@main" / task / "results.json").read_text())
        assert record["tasks_trained"] == [task] and record["model"]["revision"] == "main"
        assert [record["transfer"][other]["accuracy"] for other in TASKS] == pytest.approx(matrix[row])


def test_sweep_directory_gives_the_same_numbers_and_marks_the_missing_job(probed, tmp_path):
    source, results = probed
    sweep = tmp_path / "sweep"
    for number, task in enumerate(TASKS):
        (sweep / str(number)).mkdir(parents=True)
        if task != "det_noun":  # job 2 failed before writing its results
            shutil.copy(source / "out" / "transfer" / "synth-tiny@main" / task / "results.json", sweep / str(number))
    cfg = probe_config(source.parent / "from-sweep", f"source.multirun_dir={sweep}", "plots=false", "gradient.objectives=[diff]")
    from_sweep = run(cfg)
    assert from_sweep.problems == ["job 2: no results.json (failed or unfinished)"]
    [entry] = from_sweep.checkpoints
    assert entry["checkpoint"] == "synth-tiny@main" and entry["transfer"]["missing_rows"] == ["det_noun"]
    got = np.array(entry["spaces"]["transfer_accuracy"]["matrix"], dtype=float)
    expected = np.array(results.checkpoints[1]["spaces"]["transfer_accuracy"]["matrix"], dtype=float)
    assert np.isnan(got[2]).all()
    assert np.allclose(np.delete(got, 2, axis=0), np.delete(expected, 2, axis=0))
    # Gradients do not depend on where the transfer rows came from.
    assert entry["spaces"]["gradient_diff_cosine"]["matrix"] == results.checkpoints[1]["spaces"]["gradient_diff_cosine"]["matrix"]


def test_unknown_task_and_single_task_are_clear_errors(probed, tmp_path):
    cache_parent = probed[0]
    with pytest.raises(GradspaceError, match="unknown task 'no_such_task'"):
        run(probe_config(cache_parent / "bad1", "task.select.synth=[no_such_task]"))
    with pytest.raises(GradspaceError, match="a task space needs at least 2"):
        run(probe_config(cache_parent / "bad2", "task.select.synth=[det_noun]"))
    with pytest.raises(GradspaceError, match="no revision 'step999'"):
        run(probe_config(cache_parent / "bad3", "revisions=[step999]", "source.inprocess=false"))
