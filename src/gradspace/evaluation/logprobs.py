"""Sequence log-probabilities: the one computation that the evaluator, FTGD and gradient probing share."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Iterator

import torch
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from gradspace.models.prefix_token import prefix_token_id

# At most this many logits per scoring forward pass (float32: 512 MB, and as much again for their log-softmax).
# Batches are counted in sentences, but a sentence's logits grow with the vocabulary: 64 held-out sentences of 20
# tokens hold 0.25 GB of logits for a 49k vocabulary and 1.3 GB for Gemma's 262k.
LOGITS_PER_PASS = 2**27


# A private copy of each tokenizer's Rust backend: the shared one keeps whatever padding and truncation the last
# ordinary tokenizer call set (transformers leaves it there), which silently changed scores.
_PLAIN_BACKENDS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _plain_backend(tokenizer):
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    cached = _PLAIN_BACKENDS.get(tokenizer)
    if cached is None or cached[0] is not backend:
        plain = Tokenizer.from_str(backend.to_str())
        plain.no_padding()
        plain.no_truncation()
        cached = (backend, plain)
        _PLAIN_BACKENDS[tokenizer] = cached
    return cached[1]


def encode_with_prefix(tokenizer, sentences: list[str]) -> list[list[int]]:
    """Token ids of each sentence with the prefix token in front and no other special tokens."""
    prefix = prefix_token_id(tokenizer)
    backend = _plain_backend(tokenizer)
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


def logit_positions_per_pass(model) -> int:
    """How many positions' logits over `model`'s vocabulary fit into LOGITS_PER_PASS (at least one)."""
    config = model.config
    vocabulary = (config.get_text_config() if hasattr(config, "get_text_config") else config).vocab_size
    return max(1, LOGITS_PER_PASS // int(vocabulary))


def target_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(targets[..., t]) under logits[..., t, :], in float32 whatever the model's dtype. Shape of `targets`."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def token_logprobs(model, batch: PaddedBatch) -> torch.Tensor:
    """log p(token_t | tokens_<t) for every position t >= 1, zero where the score mask is off. Shape [B, T]."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    picked = target_logprobs(logits[:, :-1], batch.input_ids[:, 1:])
    mask = batch.score_mask[:, 1:].to(picked.dtype)
    return torch.nn.functional.pad(picked * mask, (1, 0))


@torch.no_grad()
def scored_batches(model, tokenizer, sentences: list[str], batch_size: int = 64, desc: str | None = None
                   ) -> Iterator[tuple[list[int], torch.Tensor, PaddedBatch]]:
    """(sentence indices, token log-probabilities [B, T], padded batch) over length-sorted batches of the sentences:
    `batch_size` sentences each, fewer where their logits would pass LOGITS_PER_PASS.

    With `desc`, a progress bar counts sentences; it appears only when scoring takes more than two seconds.
    """
    encoded = encode_with_prefix(tokenizer, sentences)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]), reverse=True)
    device = next(model.parameters()).device
    pad_id = pad_token_id(tokenizer)
    positions_per_pass = logit_positions_per_pass(model)
    with tqdm(total=len(order), desc=desc, unit="sent", disable=desc is None, delay=2.0, leave=False, dynamic_ncols=True) as bar:
        start = 0
        while start < len(order):
            # the longest sentence comes first in a batch and sets its padded length
            rows = max(1, min(batch_size, positions_per_pass // len(encoded[order[start]])))
            chunk = order[start : start + rows]
            batch = pad_sequences([encoded[i] for i in chunk], pad_id).to(device)
            yield chunk, token_logprobs(model, batch), batch
            bar.update(len(chunk))
            start += rows
