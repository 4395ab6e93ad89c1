"""Sparse parameter masks: update only the parameters with the largest |gradient differential|.

A mask keeps the top `density` share of entries, ranked over all parameters at once (`global`) or within each
tensor (`per_tensor`). It is either fixed, from the differential summed over the first `calibration_batches`
batches, or recomputed from the current step's differential every `recompute_every` steps. Masked-out entries get
no gradient and are held at their value through the optimizer step, so neither momentum nor weight decay moves them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import torch

from gradspace.errors import GradspaceError

MASK_KINDS = ("none", "topk")
SCOPES = ("global", "per_tensor")
SCHEDULES = ("fixed", "recompute")


@dataclass
class MaskConfig:
    """`ftgd.mask` of train.yaml, which holds every value."""

    kind: str  # none | topk
    density: float  # share of parameter entries that are updated
    scope: str  # global | per_tensor
    schedule: str  # fixed | recompute
    calibration_batches: int  # fixed masks: batches whose summed differential ranks the parameters
    recompute_every: int  # recomputed masks: steps between recomputations

    def __post_init__(self) -> None:
        problems = []
        if self.kind not in MASK_KINDS:
            problems.append(f"kind='{self.kind}' is not one of {', '.join(MASK_KINDS)}")
        if self.scope not in SCOPES:
            problems.append(f"scope='{self.scope}' is not one of {', '.join(SCOPES)}")
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule='{self.schedule}' is not one of {', '.join(SCHEDULES)}")
        if not 0.0 < float(self.density) <= 1.0:
            problems.append(f"density={self.density} must lie in (0, 1]")
        if self.calibration_batches < 1:
            problems.append(f"calibration_batches={self.calibration_batches} must be at least 1")
        if self.recompute_every < 1:
            problems.append(f"recompute_every={self.recompute_every} must be at least 1")
        if problems:
            raise GradspaceError("invalid ftgd.mask: " + "; ".join(problems) + "; fix the ftgd.mask settings")

    @property
    def active(self) -> bool:
        return self.kind != "none"


def topk_masks(scores: dict[str, torch.Tensor], density: float, scope: str) -> dict[str, torch.Tensor]:
    """Boolean masks keeping the ceil(density * size) highest-scoring entries, over all tensors or per tensor."""
    if scope not in SCOPES:
        raise GradspaceError(f"mask scope '{scope}' is unknown; use one of {', '.join(SCOPES)}")
    if scope == "per_tensor":
        return {name: _topk_flat(score.flatten(), density).view_as(score) for name, score in scores.items()}
    flat = torch.cat([score.detach().flatten().float() for score in scores.values()])
    keep = _topk_flat(flat, density)
    masks, offset = {}, 0
    for name, score in scores.items():
        masks[name] = keep[offset : offset + score.numel()].view_as(score)
        offset += score.numel()
    return masks


def _topk_flat(flat: torch.Tensor, density: float) -> torch.Tensor:
    k = max(1, math.ceil(density * flat.numel()))
    keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    keep[torch.topk(flat.detach().float(), k, sorted=False).indices] = True
    return keep


class ParameterMask:
    """The current masks of a model's named parameters and the operations the training hooks apply."""

    def __init__(self, config: MaskConfig) -> None:
        self.config = config
        self.masks: dict[str, torch.Tensor] = {}

    @property
    def ready(self) -> bool:
        return bool(self.masks)

    def set_from_scores(self, scores: dict[str, torch.Tensor]) -> None:
        self.masks = topk_masks({name: score.abs() for name, score in scores.items()}, self.config.density, self.config.scope)

    def due(self, step: int) -> bool:
        """Whether the mask is (re)computed from the gradient of this optimizer step."""
        if self.config.schedule == "recompute":
            return step % self.config.recompute_every == 0
        return not self.ready

    def mask_gradients(self, named_parameters: Iterable[tuple[str, torch.nn.Parameter]]) -> None:
        for name, param in named_parameters:
            if param.grad is not None:
                param.grad.mul_(self.masks[name].to(param.grad.dtype))

    def snapshot(self, named_parameters: Iterable[tuple[str, torch.nn.Parameter]]) -> dict[str, torch.Tensor]:
        return {name: param.detach().clone() for name, param in named_parameters}

    @torch.no_grad()
    def restore_masked(self, named_parameters: Iterable[tuple[str, torch.nn.Parameter]], before: dict[str, torch.Tensor]) -> None:
        """Put every masked-out entry back to its value before the optimizer step."""
        for name, param in named_parameters:
            param.copy_(torch.where(self.masks[name], param, before[name]))

    def density(self) -> float:
        kept = sum(int(mask.sum()) for mask in self.masks.values())
        total = sum(mask.numel() for mask in self.masks.values())
        return kept / max(total, 1)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: mask.cpu() for name, mask in self.masks.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.masks = dict(state)

    def to(self, device: torch.device | str) -> None:
        self.masks = {name: mask.to(device) for name, mask in self.masks.items()}
