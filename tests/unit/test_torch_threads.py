"""`torch_threads` is one setting of all three entry points, applied and checked by one function."""

import os
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from gradspace.errors import GradspaceError
from gradspace.utils.seeding import set_torch_threads

pytestmark = pytest.mark.unit

CONF = Path(__file__).resolve().parents[2] / "conf"


@pytest.mark.parametrize("entry", ["train", "probe", "label"])
def test_every_entry_point_has_the_setting(entry):
    assert "torch_threads" in OmegaConf.load(CONF / f"{entry}.yaml")


def test_none_keeps_the_default_and_a_number_is_set(monkeypatch):
    calls = []
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    set_torch_threads(None)
    set_torch_threads(3)
    assert calls == [3]


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2", 5, 10**9])
def test_anything_else_is_one_clear_error(bad, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: pytest.fail("set with a bad value"))
    with pytest.raises(GradspaceError, match=r"^torch_threads=.* is not a whole number in 1\.\.4 \(this machine's CPUs\); set torch_threads=<threads> or null$"):
        set_torch_threads(bad)
