"""Labels without optimisation, scored beside the learned one: the most frequent top-activating token, for word lists
also the list's first word, and for SAE latents the output-centric vocabulary projection (unembedding · decoder
direction)."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import torch


def most_frequent_token(tokens: Sequence[int], allowed: torch.Tensor) -> int | None:
    """The most frequent of `tokens` that may be a label (ties: the earlier one), or None if there is none."""
    counts = Counter(int(t) for t in tokens if bool(allowed[int(t)]))
    if not counts:
        return None
    order = {token: index for index, token in reversed(list(enumerate(int(t) for t in tokens)))}
    return max(counts, key=lambda token: (counts[token], -order[token]))


def vocabulary_projection(unembedding: torch.Tensor, direction: torch.Tensor, allowed: torch.Tensor, top: int = 10) -> list[int]:
    """Allowed tokens whose unembedding rows align most with `direction` ([V, d] @ [d])."""
    logits = unembedding.float() @ direction.to(unembedding.device).float()
    logits = logits.masked_fill(~allowed.to(logits.device)[: logits.shape[0]], float("-inf"))
    return logits.topk(top).indices.tolist()
