"""probe.py at phenomenon granularity, side-effect copies, and resuming a probe that was interrupted after one task,
on the tiny synthetic model of test_probe.py."""

import json

import numpy as np
import pytest

import gradspace.ftgd.run as ftgd_run
import gradspace.probing.measure as probe_measure
from gradspace.probing.run import run
from test_probe import probe_config  # the tiny model and budget of the main probe test

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ONE_REVISION = "revisions=[main]"


def interrupt_after(monkeypatch, module, name: str, calls: int) -> list:
    """Make `module.name` raise KeyboardInterrupt (as a killed run stops) on call number `calls + 1`; returns the
    list of calls made."""
    original, made = getattr(module, name), []

    def wrapper(*args, **kwargs):
        if len(made) == calls:
            raise KeyboardInterrupt
        made.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return made


def counting(monkeypatch, module, name: str) -> list:
    return interrupt_after(monkeypatch, module, name, calls=10**9)


def matrices(results) -> dict:
    return {name: np.array(space["matrix"], dtype=float) for name, space in results.checkpoints[0]["spaces"].items()}


def test_phenomenon_granularity_pools_each_copy_over_its_phenomenon(tmp_path):
    results = run(probe_config(tmp_path, ONE_REVISION, "granularity=phenomenon", "transfer.side_effect_objectives=[lm]"))
    entry = results.checkpoints[0]
    assert results.granularity == "phenomenon" and entry["tasks"] == ["anaphor", "determiner_noun"]
    # Synthetic phenomena have no broader category: each is its own group, so the hypothesis is constant.
    assert results.phenomena == {"anaphor": "anaphor", "determiner_noun": "determiner_noun"}
    assert "constant" in entry["spaces"]["gradient_diff_cosine"]["hypothesis"]["note"]
    # The anaphor copy trained both anaphor paradigms; its determiner_noun cell is the pair-weighted mean of the
    # paradigm cells its own results.json holds.
    job = json.loads((tmp_path / "out" / "transfer" / "synth-tiny@main" / "anaphor" / "results.json").read_text())
    assert sorted(job["tasks_trained"]) == ["anaphor_gender", "anaphor_number"]
    parts = [(job["transfer"][t]["accuracy"], job["eval_after"][t]["pairs"]) for t in ("det_noun", "number_noun")]
    expected = sum(delta * pairs for delta, pairs in parts) / sum(pairs for _, pairs in parts)
    assert matrices(results)["transfer_accuracy"][0, 1] == pytest.approx(expected)
    # Every copy reports its side effects: the held-out LM-loss change and the change on its own task.
    copies = entry["transfer"]["copies"]
    assert sorted((c["objective"], c["task"]) for c in copies) == [
        ("bounded", "anaphor"), ("bounded", "determiner_noun"), ("lm", "anaphor"), ("lm", "determiner_noun")]
    for copy in copies:
        loss = copy["heldout_lm_loss"]
        assert loss["delta"] == pytest.approx(loss["after"] - loss["before"])
        own = copy["own_task"]
        assert own["accuracy_delta"] == pytest.approx(own["accuracy_after"] - own["accuracy_before"])
    bounded_anaphor = next(c for c in copies if c["objective"] == "bounded" and c["task"] == "anaphor")
    assert bounded_anaphor["own_task"]["accuracy_delta"] == pytest.approx(matrices(results)["transfer_accuracy"][0, 0])


def test_an_interrupted_probe_resumes_from_the_tasks_it_finished(tmp_path, monkeypatch):
    fresh = run(probe_config(tmp_path / "fresh", ONE_REVISION, "resume=false"))

    # Stopped during the gradients of the second task: the first task's gradient is on disk.
    made = interrupt_after(monkeypatch, probe_measure, "add_task_gradients", calls=1)
    with pytest.raises(KeyboardInterrupt):
        run(probe_config(tmp_path / "killed", ONE_REVISION))
    assert len(made) == 1 and len(list((tmp_path / "killed" / "out" / "gradients").rglob("*.npz"))) == 1
    monkeypatch.undo()

    # Stopped during the second fine-tuning job: every gradient and the first job are on disk.
    gradients = counting(monkeypatch, probe_measure, "add_task_gradients")
    jobs = interrupt_after(monkeypatch, ftgd_run, "run", calls=1)
    with pytest.raises(KeyboardInterrupt):
        run(probe_config(tmp_path / "killed", ONE_REVISION))
    assert len(gradients) == 2 * 4 - 1  # two objectives, four tasks, one already done
    assert len(jobs) == 1
    monkeypatch.undo()

    gradients = counting(monkeypatch, probe_measure, "add_task_gradients")
    jobs = counting(monkeypatch, ftgd_run, "run")
    resumed = run(probe_config(tmp_path / "killed", ONE_REVISION))
    assert len(gradients) == 0 and len(jobs) == 3
    for name, matrix in matrices(fresh).items():
        assert np.allclose(matrices(resumed)[name], matrix, equal_nan=True), name
    monkeypatch.undo()

    # A changed setting is measured again, not reused.
    gradients = counting(monkeypatch, probe_measure, "add_task_gradients")
    run(probe_config(tmp_path / "killed", ONE_REVISION, "gradient.max_pairs_per_task=6", "source.inprocess=false"))
    assert len(gradients) == 2 * 4
