"""FTGD objectives: losses over a minimal pair whose gradient is the (shaped) gradient differential.

For a pair, the gradient differential is  d = grad(-log p_good) - grad(-log p_bad): what the two sentences share
(lexical content, other phenomena) cancels, what makes one grammatical and the other not remains. With the margin
m = log p_good - log p_bad, every pair objective is f(-m) for some f, so its gradient is f'(-m) * d, i.e. the
differential scaled per pair. Good and bad sentences go through the model as one padded batch, and by linearity a
single backward of the batch loss gives the mean scaled differential over the batch.

- `diff`:        -m (f = identity). Unbounded: pushing the bad sentence's probability to zero keeps paying off,
                 which collapses a model.
- `bounded`:     softplus(-m) = -log sigmoid(m), the default. The weight sigmoid(-m) fades as a pair is learned.
- `diff_tokens`: -m scored only on the tokens where good and bad differ, so the shared context contributes
                 neither to the margin nor to the gradient.
- `lm`:          the baseline: plain token-mean language-model loss on the good sentences alone.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import torch

from gradspace.errors import GradspaceError
from gradspace.evaluation.logprobs import PaddedBatch, encode_with_prefix, pad_sequences, pad_token_id, token_logprobs
from gradspace.pairs import MinimalPair

OBJECTIVES = ("bounded", "diff", "diff_tokens", "lm")  # "lm" = the plain LM baseline on good sentences


@dataclass
class PairBatch:
    """One padded batch: rows [0, n) are the good sentences, rows [n, 2n) the bad ones ("lm": only good rows)."""

    batch: PaddedBatch
    n_pairs: int

    def to(self, device) -> "PairBatch":
        return PairBatch(self.batch.to(device), self.n_pairs)


def check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise GradspaceError(f"objective '{objective}' is unknown; use one of {', '.join(OBJECTIVES)}")


def differing_token_masks(good: list[int], bad: list[int]) -> tuple[list[int], list[int]]:
    """Score masks marking the tokens where two sequences differ (an edit-script alignment of the token ids).

    A substitution marks the substituted tokens on both sides. Where a span exists on one side only, the other
    side marks the token right after the gap, whose prediction is where the missing span shows; a gap at the very
    end has no such token. The prefix token (position 0) is never scored.
    """
    good_mask, bad_mask = [0] * len(good), [0] * len(bad)
    matcher = difflib.SequenceMatcher(a=good, b=bad, autojunk=False)
    for op, g0, g1, b0, b1 in matcher.get_opcodes():
        if op == "equal":
            continue
        for index in range(g0, g1 if g1 > g0 else min(g0 + 1, len(good))):
            good_mask[index] = 1
        for index in range(b0, b1 if b1 > b0 else min(b0 + 1, len(bad))):
            bad_mask[index] = 1
    good_mask[0] = bad_mask[0] = 0
    return good_mask, bad_mask


def collate_pairs(tokenizer, pairs: list[MinimalPair], objective: str) -> PairBatch:
    """Tokenize and right-pad a list of pairs into one batch for `objective`."""
    check_objective(objective)
    if not pairs:
        raise ValueError("collate_pairs needs at least one pair")
    good = encode_with_prefix(tokenizer, [pair.good for pair in pairs])
    pad_id = pad_token_id(tokenizer)
    if objective == "lm":
        return PairBatch(pad_sequences(good, pad_id), n_pairs=len(pairs))
    bad = encode_with_prefix(tokenizer, [pair.bad for pair in pairs])
    score_masks = None
    if objective == "diff_tokens":
        masks = [differing_token_masks(g, b) for g, b in zip(good, bad)]
        score_masks = [m[0] for m in masks] + [m[1] for m in masks]
    return PairBatch(pad_sequences(good + bad, pad_id, score_masks), n_pairs=len(pairs))


def objective_loss(model, pair_batch: PairBatch, objective: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Scalar loss of one batch (one forward pass over good and bad rows) and detached batch statistics.

    Pair objectives report `margin` (mean log p_good - log p_bad over the scored tokens) and `accuracy`
    (share of pairs with a positive margin); `bounded` also reports `pair_weight`, the mean sigmoid(-margin)
    that scales each pair's differential. `lm` reports `lm_loss` (token-mean negative log-likelihood).
    """
    check_objective(objective)
    logprobs = token_logprobs(model, pair_batch.batch)  # [rows, T], zero off the score mask
    if objective == "lm":
        scored = pair_batch.batch.score_mask[:, 1:].sum().clamp(min=1)
        loss = -logprobs.sum() / scored
        return loss, {"lm_loss": loss.detach()}
    n = pair_batch.n_pairs
    if logprobs.shape[0] != 2 * n:
        raise ValueError(f"a {objective} batch needs 2 * n_pairs = {2 * n} rows, got {logprobs.shape[0]}")
    sequence = logprobs.sum(dim=-1)
    margin = sequence[:n] - sequence[n:]
    if objective == "bounded":
        loss = torch.nn.functional.softplus(-margin).mean()
    else:
        loss = (-margin).mean()
    stats = {"margin": margin.detach().mean(), "accuracy": (margin.detach() > 0).float().mean()}
    if objective == "bounded":
        stats["pair_weight"] = torch.sigmoid(-margin.detach()).mean()
    return loss, stats
