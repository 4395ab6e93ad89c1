"""Every shipped train option composes into a config that an FTGD run accepts (without running it)."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from gradspace.ftgd.masks import MaskConfig
from gradspace.ftgd.objectives import OBJECTIVES
from gradspace.ftgd.report import run_label

pytestmark = pytest.mark.unit

CONF = Path(__file__).resolve().parents[2] / "conf"
LOCAL = ["model=local", "model.path=/nonexistent/model"]


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF / group).glob("*.yaml"))


def cases():
    for group in ("objective", "callbacks", "trainer", "logger", "task"):
        for option in options(group):
            extra = ["task.name=sva_pp"] if (group, option) == ("task", "paradigm") else []
            yield pytest.param([*LOCAL, f"{group}={option}", *extra], id=f"{group}={option}")
    for option in options("experiment"):
        if option.startswith("train_"):  # experiments are named after the entry point they configure
            yield pytest.param([f"experiment={option}"], id=f"experiment={option}")
    yield pytest.param([], id="defaults")


def compose_train(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("overrides", list(cases()))
def test_train_option_composes_into_a_runnable_config(overrides):
    cfg = compose_train(overrides)
    assert cfg.objective.name in OBJECTIVES
    budget = OmegaConf.to_container(cfg.ftgd, resolve=True)
    assert budget["max_steps"] > 0 and budget["batch_size"] > 0
    MaskConfig(**budget["mask"])
    optimizer = OmegaConf.to_container(cfg.optimizer, resolve=True)
    assert optimizer["_partial_"] is True and optimizer["lr"] > 0
    assert cfg.trainer._target_ == "lightning.pytorch.Trainer"
    callbacks = OmegaConf.to_container(cfg.callbacks, resolve=False)
    targets = {node["_target_"] for node in callbacks.values() if node}
    assert {"gradspace.ftgd.callbacks.TransferEvaluation", "gradspace.ftgd.callbacks.HeldoutLoss"} <= targets
    assert run_label(cfg).startswith(f"{cfg.model.name}@")


def test_budgets_follow_the_model_source():
    synth = compose_train([])
    real = compose_train(["model=pythia-410m"])
    assert synth.model.source == "synth" and real.model.source == "hf"
    assert synth.optimizer.lr > real.optimizer.lr and real.ftgd.max_steps > synth.ftgd.max_steps
    assert compose_train(["model=pythia-410m", "optimizer.lr=3e-5"]).optimizer.lr == 3e-5


def test_no_checkpoints_disables_checkpointing_but_keeps_the_measurements():
    cfg = compose_train([*LOCAL, "callbacks=no_checkpoints"])
    assert cfg.callbacks.model_checkpoint is None and cfg.trainer.enable_checkpointing is False
    assert cfg.callbacks.transfer_evaluation._target_.endswith("TransferEvaluation")


def test_experiments_set_what_they_promise():
    pythia = compose_train(["experiment=train_pythia_sva"])
    assert pythia.model.name == "pythia-410m" and pythia.trainer.accelerator == "gpu" and pythia.optimizer.lr == 1e-5
    topk = compose_train([*LOCAL, "experiment=train_topk_mask"])
    assert topk.ftgd.mask.kind == "topk" and topk.ftgd.mask.density == 0.01
