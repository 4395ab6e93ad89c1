"""Sequence log-probabilities: the one computation that the evaluator, FTGD and gradient probing share."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def prefix_token_id(tokenizer) -> int:
    """The token every sentence is conditioned on: BOS, else EOS (the lm-evaluation-harness convention)."""
    token_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if token_id is None:
        raise ValueError("the tokenizer has neither a BOS nor an EOS token to condition the first word on")
    return token_id


def encode_with_prefix(tokenizer, sentences: list[str]) -> list[list[int]]:
    """Token ids of each sentence with the prefix token in front and no other special tokens."""
    prefix = prefix_token_id(tokenizer)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # The Rust tokenizer directly: the same ids without one Python BatchEncoding per sentence, which took
        # as long as a tenth of the forward passes of scoring a BLiMP suite.
        encoded = [encoding.ids for encoding in backend.encode_batch(list(sentences), add_special_tokens=False)]
    else:
        encoded = tokenizer(list(sentences), add_special_tokens=False)["input_ids"]
    return [[prefix, *ids] for ids in encoded]


@dataclass
class PaddedBatch:
    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T], 1 on real tokens
    score_mask: torch.Tensor  # [B, T], 1 on tokens whose log-probability counts (all but the prefix)

    def to(self, device) -> "PaddedBatch":
        return PaddedBatch(self.input_ids.to(device), self.attention_mask.to(device), self.score_mask.to(device))


def pad_sequences(sequences: list[list[int]], pad_id: int, score_masks: list[list[int]] | None = None) -> PaddedBatch:
    """Right-pad token sequences; by default every token after the prefix is scored."""
    length = max(len(seq) for seq in sequences)
    input_ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
    score_mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention_mask[row, : len(seq)] = 1
        if score_masks is None:
            score_mask[row, 1 : len(seq)] = 1
        else:
            score_mask[row, : len(seq)] = torch.tensor(score_masks[row], dtype=torch.long)
    return PaddedBatch(input_ids, attention_mask, score_mask)


def pad_token_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else prefix_token_id(tokenizer)


def token_logprobs(model, batch: PaddedBatch) -> torch.Tensor:
    """log p(token_t | tokens_<t) for every position t >= 1, zero where the score mask is off. Shape [B, T]."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    targets = batch.input_ids[:, 1:]
    picked = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    mask = batch.score_mask[:, 1:].to(picked.dtype)
    return torch.nn.functional.pad(picked * mask, (1, 0))


def sequence_logprobs(model, batch: PaddedBatch) -> torch.Tensor:
    """Sum of scored token log-probabilities per sequence. Shape [B]."""
    return token_logprobs(model, batch).sum(dim=-1)
