"""One task's gradient under an FTGD objective (the gradient differential) or the LM baseline, at a fixed model.

The loss is the FTGD objective itself (`gradspace.ftgd.objectives`), so the direction probed here is the direction
FTGD would train in. The gradient is the mean over the task's pairs, accumulated batch by batch in the parameters'
`.grad` (one gradient copy in memory) and handed to a `GradientSpace` before the next task starts.
"""

from __future__ import annotations

from typing import Iterator

import torch

from gradspace.ftgd.objectives import check_objective, collate_pairs, objective_loss
from gradspace.pairs import MinimalPair
from gradspace.probing.gradient_similarity import GradientSpace


def accumulate_task_gradient(model: torch.nn.Module, tokenizer, pairs: list[MinimalPair], objective: str,
                             batch_size: int = 64) -> list[tuple[str, torch.Tensor | None]]:
    """Leave the mean gradient of `objective` over `pairs` in the parameters' `.grad` and return (name, grad).

    The model runs in eval mode (no dropout: the gradient is a property of the checkpoint, not of a random mask).
    """
    check_objective(objective)
    if not pairs:
        raise ValueError("a task gradient needs at least one pair")
    was_training = model.training
    model.eval()
    model.zero_grad(set_to_none=True)
    device = next(model.parameters()).device
    try:
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            loss, _ = objective_loss(model, collate_pairs(tokenizer, chunk, objective).to(device), objective)
            # Batch losses are means over their pairs; weighting by size makes the total a mean over all pairs.
            (loss * (len(chunk) / len(pairs))).backward()
    finally:
        model.train(was_training)
    return [(name, param.grad) for name, param in model.named_parameters() if param.requires_grad]


def add_task_gradients(space: GradientSpace, model: torch.nn.Module, tokenizer, pairs_by_task: dict[str, list[MinimalPair]],
                       objective: str, batch_size: int = 64) -> Iterator[str]:
    """Stream every task's gradient into `space`, one task at a time; yields each task when it is in."""
    for task, pairs in pairs_by_task.items():
        gradient = accumulate_task_gradient(model, tokenizer, pairs, objective, batch_size)
        space.add(task, gradient)
        model.zero_grad(set_to_none=True)
        yield task
