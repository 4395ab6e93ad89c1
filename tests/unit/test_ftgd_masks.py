"""Sparse top-k parameter masks: density, global vs per-tensor ranking, and masked entries that never move."""

import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from gradspace.errors import GradspaceError
from gradspace.ftgd.masks import MaskConfig, ParameterMask, topk_masks

pytestmark = pytest.mark.unit

SHIPPED_MASK = OmegaConf.to_container(OmegaConf.load(Path(__file__).resolve().parents[2] / "conf" / "train.yaml").ftgd.mask)


def mask_config(**changes) -> MaskConfig:
    """train.yaml's `ftgd.mask` with `changes`."""
    return MaskConfig(**{**SHIPPED_MASK, **changes})


def scores() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    # One tensor with large scores, one with small ones: a global ranking takes almost everything from the first.
    return {"large": torch.rand(40, 25) + 10.0, "small": torch.rand(300)}


@pytest.mark.parametrize("density", [0.01, 0.1, 0.5, 1.0])
def test_global_density_is_exact(density):
    masks = topk_masks(scores(), density, "global")
    total = sum(m.numel() for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == math.ceil(density * total)


def test_global_ranking_is_across_tensors():
    s = scores()
    masks = topk_masks(s, 0.5, "global")  # 650 of 1300 entries: all in "large" (1000 entries with scores > 10)
    assert int(masks["large"].sum()) == 650 and int(masks["small"].sum()) == 0
    kept_min = s["large"][masks["large"]].min()
    assert kept_min >= s["large"][~masks["large"]].max()


def test_per_tensor_keeps_density_within_each_tensor():
    s = scores()
    masks = topk_masks(s, 0.1, "per_tensor")
    assert int(masks["large"].sum()) == 100 and int(masks["small"].sum()) == 30
    assert s["small"][masks["small"]].min() >= s["small"][~masks["small"]].max()
    assert masks["large"].shape == (40, 25)


def test_every_tensor_keeps_at_least_one_entry_per_tensor():
    masks = topk_masks({"a": torch.ones(10), "b": torch.ones(3)}, 1e-6, "per_tensor")
    assert int(masks["a"].sum()) == 1 and int(masks["b"].sum()) == 1


def test_ranking_uses_absolute_differential():
    mask = ParameterMask(mask_config(kind="topk", density=0.25))
    mask.set_from_scores({"w": torch.tensor([0.1, -5.0, 0.2, 3.0, 0.0, -0.3, 0.05, 0.01])})
    assert mask.masks["w"].tolist() == [False, True, False, True, False, False, False, False]
    assert mask.density() == 0.25


def test_masked_parameters_do_not_move_under_adamw_with_weight_decay_and_momentum():
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 8)
    named = list(layer.named_parameters())
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1, weight_decay=0.5)
    mask = ParameterMask(mask_config(kind="topk", density=0.2, schedule="recompute"))
    start = {name: p.detach().clone() for name, p in named}
    for step in range(4):
        optimizer.zero_grad()
        layer(torch.randn(4, 8)).pow(2).sum().backward()
        mask.set_from_scores({name: p.grad for name, p in named})  # a different mask each step
        mask.mask_gradients(named)
        before = mask.snapshot(named)
        optimizer.step()
        mask.restore_masked(named, before)
        for name, p in named:
            frozen = ~mask.masks[name]
            assert torch.equal(p.detach()[frozen], before[name][frozen]), f"masked entries of {name} moved at step {step}"
            kept = ~frozen
            assert not kept.any() or not torch.equal(p.detach()[kept], before[name][kept])
    moved = sum(int((p.detach() != start[name]).sum()) for name, p in named)
    assert 0 < moved < sum(p.numel() for _, p in named)


def test_fixed_mask_is_due_once_and_recompute_follows_its_period():
    fixed = ParameterMask(mask_config(kind="topk", schedule="fixed"))
    assert fixed.due(0)
    fixed.set_from_scores({"w": torch.ones(4)})
    assert not fixed.due(1)
    recompute = ParameterMask(mask_config(kind="topk", schedule="recompute", recompute_every=3))
    assert [recompute.due(step) for step in range(7)] == [True, False, False, True, False, False, True]


def test_mask_state_round_trips():
    mask = ParameterMask(mask_config(kind="topk", density=0.5))
    mask.set_from_scores({"w": torch.arange(6.0)})
    restored = ParameterMask(mask_config(kind="topk", density=0.5))
    restored.load_state_dict(mask.state_dict())
    assert restored.ready and torch.equal(restored.masks["w"], mask.masks["w"])


@pytest.mark.parametrize("bad", [{"kind": "random"}, {"density": 0.0}, {"density": 1.5}, {"scope": "layer"},
                                 {"schedule": "sometimes"}, {"calibration_batches": 0}, {"recompute_every": 0}])
def test_invalid_mask_config_is_a_user_error(bad):
    with pytest.raises(GradspaceError, match="invalid ftgd.mask"):
        mask_config(**bad)
