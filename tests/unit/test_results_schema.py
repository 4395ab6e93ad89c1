"""results.json is written from a dataclass and read back only through it: the same fields in and out, and a file
of another schema (or a stray or missing field) refused with one line."""

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from conftest import train_results
from gradspace.errors import GradspaceError
from gradspace.ftgd.results import SCHEMA_VERSION, TrainResults
from gradspace.probing.config import ProbeConfig
from gradspace.probing.results import ProbeResults

pytestmark = pytest.mark.unit

CONF = Path(__file__).resolve().parents[2] / "conf"


def test_train_results_round_trip_through_json(tmp_path):
    results = train_results(fit_seconds=1.5, eval_before={"t": {"accuracy": 0.5, "margin": 0.1, "pairs": 3}})
    written = results.to_json()
    assert written["schema_version"] == SCHEMA_VERSION and "source" not in written
    assert TrainResults.from_json(json.loads(json.dumps(written)), "here") == results
    # A file on disk has no timings (they go to timings.json).
    del written["fit_seconds"]
    (tmp_path / "results.json").write_text(json.dumps(written))
    read = TrainResults.read(tmp_path / "results.json", "job 0")
    assert read.fit_seconds is None and read.source == "job 0" and read.eval_before == results.eval_before


@pytest.mark.parametrize("change, message", [
    ({"schema_version": None}, "schema_version None, this gradspace reads 1"),
    ({"schema_version": 0}, "schema_version 0"),
    ({"extra": 1}, "unknown field extra"),
    ({"transfer": ...}, "no field transfer"),
])
def test_train_results_of_another_schema_are_refused(change, message):
    data = train_results().to_json()
    for key, value in change.items():
        if value is ...:
            del data[key]
        else:
            data[key] = value
    with pytest.raises(GradspaceError, match=f"^job 3: .*{message}.*rerun that train.py job"):
        TrainResults.from_json(data, "job 3")


def test_unreadable_train_results_name_the_file(tmp_path):
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(GradspaceError, match="job 1: unreadable results.json"):
        TrainResults.read(tmp_path / "results.json", "job 1")


def probe_config(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="probe", overrides=["logger=none", *overrides])


def test_probe_config_holds_every_setting_of_probe_yaml():
    probe = ProbeConfig.from_config(probe_config())
    assert probe.gradient.objectives == ["diff", "lm"] and probe.transfer.objective == "bounded"
    assert probe.revisions == ["step100", "main"] and probe.source.inprocess and probe.hypothesis.n_permutations == 1000
    assert probe.gradient.space_config().sketch_dim == 8192


@pytest.mark.parametrize("override, message", [
    ("+revison=[main]", "revison is not a setting of probe.py"),
    ("+gradient.sketch=3", "gradient.sketch is not a setting of gradient"),
    ("gradient.objectives=[diff,nope]", "objective 'nope' is unknown"),
    ("granularity=term", "granularity=term is unknown"),
    ("source.multirun_dir=a", None),
])
def test_probe_config_refuses_unknown_keys_and_values(override, message):
    cfg = probe_config(override, *(["source.wandb_group=g"] if message is None else []))
    with pytest.raises(GradspaceError, match=message or "set only one of source.multirun_dir and source.wandb_group"):
        ProbeConfig.from_config(cfg)


def test_probe_results_round_trip_through_json(tmp_path):
    results = ProbeResults(status="ok", granularity="paradigm", tasks=["a", "b"], phenomena={"a": "x", "b": "x"},
                           checkpoints=[{"checkpoint": "m@main"}], problems=[], config={}, summary=[], trends=[], files={},
                           seconds=None)
    (tmp_path / "results.json").write_text(json.dumps({k: v for k, v in results.to_json().items() if k != "seconds"}))
    assert ProbeResults.read(tmp_path / "results.json") == results
