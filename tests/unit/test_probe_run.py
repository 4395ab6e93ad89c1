from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import train_results
from gradspace.errors import GradspaceError
from gradspace.probing.config import ProbeConfig
from gradspace.probing.finetune import train_config
from gradspace.probing.plan import plan_checkpoints, requested_revisions
from gradspace.probing.report import display_name
from gradspace.probing.spaces import trends
from gradspace.probing.transfer import SweepRecords

pytestmark = pytest.mark.unit

CONF = Path(__file__).resolve().parents[2] / "conf"


def probe_cfg(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="probe", overrides=["logger=none", "paths.output_dir=/tmp/x", *overrides])


def revisions(cfg):
    return requested_revisions(ProbeConfig.from_config(cfg), cfg.model.revision)


def planned(cfg, read=None):
    return plan_checkpoints(ProbeConfig.from_config(cfg), OmegaConf.to_container(cfg.model, resolve=True), read)


def transfer_train_config(cfg, model_cfg, task, output_dir):
    return train_config(ProbeConfig.from_config(cfg), cfg.data, cfg.paths, model_cfg, task, output_dir)


def test_default_is_synth_1m_at_an_early_and_the_final_checkpoint():
    cfg = probe_cfg()
    assert cfg.model.name == "synth-1m" and revisions(cfg) == ["step100", "main"]
    assert list(cfg.gradient.objectives) == ["diff", "lm"] and cfg.source.inprocess


def test_revisions_null_means_the_model_revision_and_empty_is_an_error():
    assert revisions(probe_cfg("revisions=null", "model.revision=step100")) == ["step100"]
    with pytest.raises(GradspaceError, match="names no checkpoint"):
        revisions(probe_cfg("revisions=[]"))


def test_train_config_trains_one_task_without_tracker_or_checkpoints():
    cfg = probe_cfg("data.eval_fraction=0.3")
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True) | {"revision": "step200"}
    train = transfer_train_config(cfg, model_cfg, "sva_pp", Path("/tmp/out/sva_pp"))
    assert train.task.name == "sva_pp" and list(train.task.select.synth) == ["sva_pp"]
    assert train.objective.name == "bounded" and train.logger.get("wandb") is None
    assert train.callbacks.model_checkpoint is None and not train.trainer.enable_checkpointing
    assert {"transfer_evaluation", "heldout_loss"} <= set(train.callbacks)
    assert train.model.revision == "step200" and train.paths.output_dir == "/tmp/out/sva_pp"
    # The probe's data split, with the transfer budget's data overrides on top.
    assert train.data.eval_fraction == 0.3 and train.data.max_eval_pairs_per_task == 100
    assert train.ftgd.max_steps == 20


def record(revision, objective="bounded"):
    return train_results(model={"name": "synth-1m", "revision": revision}, objective=objective,
                         config={"model": {"name": "synth-1m", "source": "synth", "revision": revision}})


def test_checkpoints_from_a_sweep_follow_its_records_and_objective():
    cfg = probe_cfg()
    read = SweepRecords([record("step100"), record("main"), record("main", "lm")], [])
    checkpoints = planned(cfg, read)
    assert [c.name for c in checkpoints] == ["synth-1m@step100", "synth-1m@main"]
    assert all(len(c.records) == 1 for c in checkpoints)
    with pytest.raises(GradspaceError, match="not transfer.objective=diff"):
        planned(probe_cfg("transfer.objective=diff"), read)


def test_trends_and_names():
    rows = [{"model": "m", "space": "gradient_diff_cosine", "revision": r, "within": w, "across": 0.1, "within_minus_across": w - 0.1,
             "spearman": s} for r, w, s in (("step200", 0.6, 0.5), ("main", 0.5, 0.6))]
    [trend] = trends(rows)
    assert trend["revisions"] == ["step200", "main"] and trend["within_minus_across"] == pytest.approx([0.5, 0.4])
    assert display_name("gradient_diff_cosine") == "diff cosine"


def test_command_line_model_revision_wins_over_the_list(monkeypatch):
    from hydra.core.hydra_config import HydraConfig

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="probe", overrides=["logger=none", "model.revision=step50"], return_hydra_config=True)
    monkeypatch.setattr(HydraConfig.instance(), "cfg", None)
    HydraConfig.instance().set_config(cfg)  # as in a `probe.py -m model.revision=step50,...` job
    assert revisions(cfg) == ["step50"]


@pytest.mark.parametrize("model", ["smollm2-135m", "gemma3-270m", "local"])
def test_single_model_sources_plan_their_one_revision(model):
    cfg = probe_cfg(f"model={model}", "model.path=/some/dir" if model == "local" else "models=[]")
    checkpoints = planned(cfg)
    assert [c.model_cfg["revision"] for c in checkpoints] == ["main"]


def test_synthetic_models_keep_every_requested_revision():
    assert [c.model_cfg["revision"] for c in planned(probe_cfg("models=[synth-4m]"))] == ["step100", "main"] * 2


@pytest.mark.parametrize("experiment, granularity, inprocess", [("probe_blimp_paradigms", "paradigm", False),
                                                                ("probe_blimp_terms", "phenomenon", True)])
def test_real_model_experiments_compose_with_their_budgets(experiment, granularity, inprocess):
    cfg = probe_cfg(f"experiment={experiment}", "models=[gemma3-270m]")
    assert cfg.model.name == "smollm2-135m" and list(cfg.models) == ["gemma3-270m"]
    assert cfg.granularity == granularity and cfg.source.inprocess == inprocess and cfg.resume
    assert cfg.task.name == "all" and revisions(cfg) == ["main"]
    assert cfg.gradient.max_pairs_per_task <= 16 and cfg.data.max_eval_pairs_per_task <= 4
    if inprocess:
        train = transfer_train_config(cfg, OmegaConf.to_container(cfg.model, resolve=True), "binding", Path("/tmp/out/binding"))
        assert train.ftgd.max_steps == 16 and train.ftgd.batch_size == 8 and train.task.name == "binding"
