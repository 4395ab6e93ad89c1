"""A finished FTGD run leaves nothing of its model behind: a probe fine-tunes its copies one after another in one
process, and each copy of Gemma-3-270M holds 4 GB of weights, gradients and optimizer state."""

import gc

import pytest
import torch

from gradspace.ftgd.module import FTGDModule
from test_train import run_in_process

pytestmark = pytest.mark.integration


def live(kind: type) -> list:
    """Instances still reachable or waiting for the cycle collector (not run here: the run must free them itself)."""
    return [obj for obj in gc.get_objects() if type(obj) is kind or kind in type(obj).__mro__]


def test_a_finished_run_frees_its_model_and_optimizer(tiny_suite_dir, tmp_path):
    gc.collect()
    run_in_process(tiny_suite_dir, tmp_path / "run", "callbacks=no_checkpoints")
    assert live(FTGDModule) == []
    assert live(torch.optim.Optimizer) == []
