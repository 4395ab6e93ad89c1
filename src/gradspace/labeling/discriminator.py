"""The frozen LM as a yes/no discriminator: label embeddings go into the prompt's label slots through
`inputs_embeds`, and the answer is the logit difference of the two answer tokens at the readout position.

Soft labels (embedding mixtures) and hard labels (embedding rows) take the same path, so the discrete step
scores candidates exactly as the model sees real tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from gradspace.labeling.prompts import PromptBatch, PromptBuilder


@dataclass
class DiscriminatorOutput:
    scores: torch.Tensor  # [N] logit(positive answer) - logit(negative answer)
    slot_logits: torch.Tensor | None  # [N, L, V] next-token logits predicting each label slot (for the naturalness prior)


class Discriminator(nn.Module):
    """Wraps a frozen causal LM; computes the shared prompt prefix once and reuses its key/value cache."""

    def __init__(self, lm: nn.Module, builder: PromptBuilder, cache_prefix_min_tokens: int = 8):
        super().__init__()
        self.lm = lm
        self.lm.eval()
        for parameter in self.lm.parameters():
            parameter.requires_grad_(False)
        self.builder = builder
        self.register_buffer("prefix_ids", torch.tensor(builder.prefix_ids, dtype=torch.long), persistent=False)
        self.register_buffer("answer_ids", torch.tensor(builder.answer_ids, dtype=torch.long), persistent=False)
        # A cache pays off only for a long prefix; a short one is cheaper to recompute with the examples.
        self.use_prefix_cache = len(builder.prefix_ids) >= max(1, cache_prefix_min_tokens)
        self._prefix_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._prefix_kv_device: torch.device | None = None
        self._prefix_last_hidden: torch.Tensor | None = None

    @property
    def embedding(self) -> torch.Tensor:
        return self.lm.get_input_embeddings().weight

    def train(self, mode: bool = True):
        # The LM stays in eval mode (no dropout) even while the soft label trains.
        super().train(mode)
        self.lm.eval()
        return self

    def _prefix_cache(self, batch_size: int):
        from transformers import DynamicCache

        device = self.prefix_ids.device
        if self._prefix_kv is None or self._prefix_kv_device != device:
            with torch.no_grad():
                out = self.lm.base_model(input_ids=self.prefix_ids[None], use_cache=True)
            self._prefix_kv = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
            self._prefix_last_hidden = out.last_hidden_state[0, -1]
            self._prefix_kv_device = device
        # A fresh cache per call: the forward appends to it. Expanded views cost no memory.
        return DynamicCache(
            ddp_cache_data=[(k.expand(batch_size, *k.shape[1:]), v.expand(batch_size, *v.shape[1:])) for k, v in self._prefix_kv],
            config=self.lm.config,
        )

    def _logits(self, hidden: torch.Tensor, token_ids: torch.Tensor | None = None) -> torch.Tensor:
        head = self.lm.get_output_embeddings()
        weight = head.weight if token_ids is None else head.weight[token_ids]
        logits = hidden @ weight.T
        if getattr(head, "bias", None) is not None:
            logits = logits + (head.bias if token_ids is None else head.bias[token_ids])
        cap = getattr(self.lm.config, "final_logit_softcapping", None)
        if cap:
            logits = cap * torch.tanh(logits / cap)
        return logits

    def forward(self, batch: PromptBatch, label_embeddings: torch.Tensor, rows: torch.Tensor, with_slot_logits: bool = False,
                an_weights: torch.Tensor | None = None) -> DiscriminatorOutput:
        """`label_embeddings` [R, L, d]; example n gets the label `rows[n]`. For templates with a label article,
        `an_weights` [R] is each label's weight on "an" (its probability of a word that takes "an"): the article
        slot gets the matching mixture of the "a" and "an" embeddings, exact for hard labels."""
        embed = self.lm.get_input_embeddings()
        n_examples = batch.input_ids.shape[0]
        inputs = embed(batch.input_ids)
        example_index = torch.arange(n_examples, device=inputs.device)[:, None].expand_as(batch.label_positions)
        inputs = inputs.index_put((example_index, batch.label_positions), label_embeddings[rows].to(inputs.dtype))
        if batch.label_article_positions is not None:
            if an_weights is None:
                raise ValueError("the prompt has a {label_article} slot: pass an_weights")
            a_row, an_row = (embed.weight[ids[0]] for ids in (self.builder.article_ids["a"], self.builder.article_ids["an"]))
            article = a_row + an_weights[rows, None].to(inputs.dtype) * (an_row - a_row)
            inputs = inputs.index_put((torch.arange(n_examples, device=inputs.device), batch.label_article_positions), article)
        offset = 0
        if self.use_prefix_cache:
            out = self.lm.base_model(inputs_embeds=inputs, past_key_values=self._prefix_cache(n_examples), use_cache=True)
        else:
            offset = self.prefix_ids.numel()
            prefix = embed(self.prefix_ids)[None].expand(n_examples, -1, -1)
            out = self.lm.base_model(inputs_embeds=torch.cat([prefix, inputs], dim=1), use_cache=False)
        hidden = out.last_hidden_state
        readout = hidden[torch.arange(n_examples, device=hidden.device), batch.readout_positions + offset]
        answer_logits = self._logits(readout, self.answer_ids)
        scores = (answer_logits[:, 0] - answer_logits[:, 1]).float()
        slot_logits = None
        if with_slot_logits:
            # The token before each label slot predicts it; a slot right after a cached prefix is predicted
            # by the prefix's last hidden state.
            before = batch.label_positions + offset - 1
            slot_hidden = hidden[example_index, before.clamp(min=0)]
            if self.use_prefix_cache and bool((before < 0).any()):
                slot_hidden = torch.where((before < 0)[..., None], self._prefix_last_hidden, slot_hidden)
            slot_logits = self._logits(slot_hidden)
        return DiscriminatorOutput(scores=scores, slot_logits=slot_logits)
