"""torchmetrics for minimal pairs: accuracy = P(good) > P(bad), and the mean log-probability margin."""

from __future__ import annotations

import torch
from torchmetrics import Metric


class MinimalPairScore(Metric):
    """Accumulates pair outcomes; `compute()` gives accuracy, mean margin (nats) and the pair count.

    States are sums, so the metric syncs across DDP processes like any torchmetrics metric.
    """

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("correct", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("margin_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, logprob_good: torch.Tensor, logprob_bad: torch.Tensor) -> None:
        margin = (logprob_good - logprob_bad).double()
        self.correct += (margin > 0).sum()
        self.margin_sum += margin.sum()
        self.total += margin.numel()

    def compute(self) -> dict[str, torch.Tensor]:
        total = self.total.clamp(min=1)
        return {"accuracy": self.correct / total, "margin": self.margin_sum / total, "pairs": self.total}
