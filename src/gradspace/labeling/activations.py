"""Activations of a model at a hook point over texts: what the built-in SAE trains on and what SAE latents are
read from, batched and padded in one place."""

from __future__ import annotations

from typing import Iterator, Sequence

import torch

from gradspace.evaluation.logprobs import prefix_token_id
from gradspace.models.hooks import capture_activations


@torch.no_grad()
def token_activations(lm, tokenizer, texts: Sequence[str], hook_name: str, batch_size: int = 64,
                      max_length: int = 64) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Per text: (its token ids, activations [n_tokens, d] at `hook_name`, float32 on the CPU). Every text starts
    with the document-start token evaluation uses (as the synthetic models saw their corpus), which is run but not
    returned; texts are cut to `max_length` tokens with it."""
    device = next(lm.parameters()).device
    start = prefix_token_id(tokenizer)
    encoded = [[start, *ids][:max_length] for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
    for first in range(0, len(encoded), batch_size):
        chunk = encoded[first : first + batch_size]
        width = max(len(ids) for ids in chunk)
        input_ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
        attention = torch.zeros_like(input_ids)
        for row, ids in enumerate(chunk):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention[row, : len(ids)] = 1
        with capture_activations(lm, [hook_name], stop_forward=True) as captured:  # the blocks after the hook never run
            lm(input_ids=input_ids.to(device), attention_mask=attention.to(device))
        activations = captured[hook_name].float().cpu()
        for row, ids in enumerate(chunk):
            yield ids[1:], activations[row, 1 : len(ids)]
