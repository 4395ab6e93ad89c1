"""The frozen LM as a discriminator: label embeddings go into the prompt's label slots through `inputs_embeds`, and
the model's output is read per (example, label) as one score, larger where the label fits the example better. The
prompt's readout (see gradspace.labeling.prompts) decides which output: the yes/no answer's logit difference, the
word's log-likelihood after the label relative to a label-free context, or the label's own log-likelihood after
the word (for a soft label p, its expected log-likelihood p·log q, so the gradient reaches p directly).

Soft labels (embedding mixtures) and hard labels (embedding rows) take the same path, so the discrete step
scores candidates exactly as the model sees real tokens.

Every call runs in two passes. Nothing before the first label-dependent position (the label, or its article)
depends on the label, so that part runs once per distinct prompt, without autograd, on top of the template's own
prefix (computed once per model). Only the rest ("a <label> ?") runs once per (prompt, label) item, with gradients,
on the first pass's key/value cache: restarts, features and candidate labels asking about the same word share it,
and the backward pass covers only the few positions the label can influence.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn
from transformers import DynamicCache

from gradspace.errors import GradspaceError
from gradspace.labeling.prompts import PromptBatch, PromptBuilder
from gradspace.models.kv_cache import cache_argument_name

# Label-free slot logits kept by a discriminator: 1 GiB is 5,000 prompts of SmolLM2 (49k vocabulary) and 1,000 of
# Gemma-3 (262k), more than a labeling run's training words for a few features.
SLOT_CACHE_BYTES = 2**30


@dataclass
class DiscriminatorOutput:
    scores: torch.Tensor  # [N] the readout: larger where the label fits the example better
    # next-token logits predicting each label slot (for the naturalness prior): [N, L, V] per item, or, for a label
    # the prompt never sees, [M, L, V] per distinct prompt with `slot_rows` [N] giving each item's row
    slot_logits: torch.Tensor | None
    slot_rows: torch.Tensor | None = None

    def item_slot_logits(self) -> torch.Tensor | None:
        """[N, L, V] each item's slot logits."""
        if self.slot_logits is None or self.slot_rows is None:
            return self.slot_logits
        return self.slot_logits[self.slot_rows]


class Discriminator(nn.Module):
    """Wraps a frozen causal LM; see the module docstring for the two passes."""

    def __init__(self, lm: nn.Module, builder: PromptBuilder, slot_cache_bytes: int = SLOT_CACHE_BYTES):
        super().__init__()
        self.lm = lm
        self.lm.eval()
        for parameter in self.lm.parameters():
            parameter.requires_grad_(False)
        self.builder = builder
        # Some models scale token embeddings inside their embedding layer (Gemma: by sqrt(hidden size)); label and
        # article rows, mixtures of the raw rows E, get the same scale, so a hard label reads as its token does.
        scale = getattr(lm.get_input_embeddings(), "embed_scale", None)
        self.input_scale = 1.0 if scale is None else float(scale)
        self.register_buffer("prefix_ids", torch.tensor(builder.prefix_ids, dtype=torch.long), persistent=False)
        self.register_buffer("answer_ids", torch.tensor(builder.answer_ids, dtype=torch.long), persistent=False)
        self._prefix_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._cache_argument = cache_argument_name(self.lm.base_model) or "past_key_values"
        self._prefix_kv_device: torch.device | None = None
        self._prefix_last_hidden: torch.Tensor | None = None
        # example_likelihood: the word's log-likelihood in the label-free prompt, which no label changes, per prompt
        self._neutral_cache: dict[tuple[int, ...], float] = {}
        # label_likelihood with one-token labels: each prompt's label-free slot logits (label_free_slot_logits)
        self.slot_cache_bytes = slot_cache_bytes
        self._slot_cache: OrderedDict[tuple[int, ...], torch.Tensor] = OrderedDict()
        # window_readout.window_tables: each window's rows, kept the same way (latents share non-activating windows)
        self.window_rows: OrderedDict[tuple[int, ...], torch.Tensor] = OrderedDict()

    @property
    def embedding(self) -> torch.Tensor:
        return self.lm.get_input_embeddings().weight

    def train(self, mode: bool = True):
        # The LM stays in eval mode (no dropout) even while the soft label trains.
        super().train(mode)
        self.lm.eval()
        return self

    def _template_prefix(self) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """Keys/values of the template's literal prefix (batch 1), computed once per device; None if it is empty."""
        if self.prefix_ids.numel() == 0:
            return None
        device = self.prefix_ids.device
        if self._prefix_kv is None or self._prefix_kv_device != device:
            with torch.no_grad():
                out = self.lm.base_model(input_ids=self.prefix_ids[None], use_cache=True)
            self._prefix_kv = [(layer.keys, layer.values) for layer in getattr(out, self._cache_argument).layers]
            self._prefix_last_hidden = out.last_hidden_state[0, -1]
            self._prefix_kv_device = device
        return self._prefix_kv

    def _cache(self, layers: list[tuple[torch.Tensor, torch.Tensor]], size: int, rows: torch.Tensor | None = None):
        """A fresh cache (the forward appends to it): batch-1 `layers` expanded to `size` rows (views, no copy),
        or the rows `rows` of batched `layers`."""
        def pick(t: torch.Tensor) -> torch.Tensor:
            return t.expand(size, *t.shape[1:]) if rows is None else t.index_select(0, rows)

        return DynamicCache(ddp_cache_data=[(pick(k), pick(v)) for k, v in layers], config=self.lm.config)

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
                an_weights: torch.Tensor | None = None, examples: torch.Tensor | None = None,
                label_probs: torch.Tensor | None = None, label_tokens: torch.Tensor | None = None) -> DiscriminatorOutput:
        """`batch` holds distinct prompts; item i asks prompt `examples[i]` (default: prompt i) about the label
        `rows[i]` of `label_embeddings` [R, L, d]. For templates with a label article, `an_weights` [R] is each
        label's weight on "an" (its probability of a word that takes "an"): the article slot gets the matching
        mixture of the "a" and "an" embeddings, exact for hard labels. The label_likelihood readout also needs the
        labels themselves: soft ones as `label_probs` [R, L, V], hard ones as `label_tokens` [R, L]. Outputs are per item."""
        readout = self.builder.readout
        if readout == "label_likelihood" and label_probs is None and label_tokens is None:
            raise ValueError("the label_likelihood readout scores the label itself: pass label_probs or label_tokens")
        if batch.label_article_positions is not None and an_weights is None:
            raise ValueError("the prompt has a {label_article} slot: pass an_weights")
        embed = self.lm.get_input_embeddings()
        device = batch.input_ids.device
        examples = torch.arange(batch.input_ids.shape[0], device=device) if examples is None else examples
        if self.label_is_only_predicted(batch):
            return self._single_label_likelihood(batch, examples, rows, label_probs, label_tokens, with_slot_logits)
        if self.word_follows_one_stem(batch):
            return self._word_after_each_label(batch, label_embeddings, rows, examples, an_weights, with_slot_logits)
        n_items = examples.shape[0]
        split, past, head_hidden = self._label_free_head(batch, examples)
        items = torch.arange(n_items, device=device)
        inputs = embed(batch.input_ids[examples, split:])
        label_positions = batch.label_positions[examples]
        item_index = items[:, None].expand_as(label_positions)
        inputs = inputs.index_put((item_index, label_positions - split), (label_embeddings[rows] * self.input_scale).to(inputs.dtype))
        if batch.label_article_positions is not None:
            a_row, an_row = (embed.weight[ids[0]] for ids in (self.builder.label_article_ids["a"], self.builder.label_article_ids["an"]))
            article = (a_row + an_weights[rows, None].to(inputs.dtype) * (an_row - a_row)) * self.input_scale
            inputs = inputs.index_put((items, batch.label_article_positions[examples] - split), article)
        hidden = self.lm.base_model(inputs_embeds=inputs, use_cache=True, **{self._cache_argument: past}).last_hidden_state
        slot_logits = None
        if with_slot_logits or readout == "label_likelihood":
            slot_logits = self._logits(self._slot_hidden(hidden, head_hidden, label_positions - 1, examples, split))
        if readout == "answer":
            answer_logits = self._logits(hidden[items, batch.readout_positions[examples] - split], self.answer_ids)
            scores = (answer_logits[:, 0] - answer_logits[:, 1]).float()
        elif readout == "example_likelihood":
            scores = (self._span_log_likelihood(hidden, batch.input_ids[examples], batch.word_starts[examples],
                                                batch.readout_positions[examples], offset=split)
                      - self._neutral_log_likelihood(batch)[examples])
        else:
            log_q = torch.log_softmax(slot_logits.float(), dim=-1)  # [items, L, V]
            if label_tokens is not None:
                scores = log_q.gather(-1, label_tokens[rows][..., None]).squeeze(-1).sum(-1)
            else:
                scores = (log_q * label_probs[rows].float()).sum((-2, -1))
        return DiscriminatorOutput(scores=scores, slot_logits=slot_logits if with_slot_logits else None)

    def _label_free_head(self, batch: PromptBatch, examples: torch.Tensor):
        """(split, the key/value cache each item starts from, the head's hidden states or None): every prompt's tokens
        before `split` are real tokens that no label changes, run once per prompt without a gradient; each item's
        cache is its prompt's rows of them (or the template's literal prefix where the label comes first)."""
        first_dependent = batch.label_positions.min()
        if batch.label_article_positions is not None:
            first_dependent = torch.minimum(first_dependent, batch.label_article_positions.min())
        split = int(first_dependent)
        if split == 0:
            template = self._template_prefix()
            return split, None if template is None else self._cache(template, examples.shape[0]), None
        with torch.no_grad():
            layers, hidden = self._run_prompts(batch.input_ids[:, :split])
        return split, self._cache(layers, examples.shape[0], examples), hidden

    def _run_prompts(self, input_ids: torch.Tensor) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
        """(key/value layers, last hidden states [n, T, d]) of the prompts `input_ids` [n, T] after the template's
        literal prefix."""
        template = self._template_prefix()
        past = None if template is None else self._cache(template, input_ids.shape[0])
        out = self.lm.base_model(input_ids=input_ids, use_cache=True, **{self._cache_argument: past})
        return [(layer.keys, layer.values) for layer in getattr(out, self._cache_argument).layers], out.last_hidden_state

    @torch.no_grad()
    def prompt_cache(self, input_ids: torch.Tensor) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
        """(key/value layers, next-token logits [n, V] after the last token) of the prompts `input_ids` [n, T]: the
        layers continue them one token at a time (`continued_logits`)."""
        layers, hidden = self._run_prompts(input_ids)
        return layers, self._logits(hidden[:, -1])

    @torch.no_grad()
    def continued_logits(self, layers: list[tuple[torch.Tensor, torch.Tensor]], token: int) -> torch.Tensor:
        """[n, V] the next-token logits after each prompt of `layers` (`prompt_cache`) continued by `token`."""
        n = layers[0][0].shape[0]
        inputs = (self.embedding[token] * self.input_scale).expand(n, 1, -1)
        past = self._cache(layers, n, torch.arange(n, device=inputs.device))
        hidden = self.lm.base_model(inputs_embeds=inputs, use_cache=True, **{self._cache_argument: past}).last_hidden_state
        return self._logits(hidden[:, -1])

    @torch.no_grad()
    def branch_logits(self, sequence: list[int], branches: list[tuple[int, list[int]]], reads: int, pad_id: int) -> torch.Tensor:
        """[n_branches, reads, V] next-token logits at the last `reads` tokens of each branch: branch (p, suffix) is
        `sequence[:p + 1]` continued by `suffix`. The sequence runs once; each branch attends to its prefix's keys and
        values through its attention mask, at the positions it would have written out in full."""
        device = self.embedding.device
        out = self.lm.base_model(input_ids=torch.tensor([sequence], device=device), use_cache=True)
        layers = [(layer.keys, layer.values) for layer in getattr(out, self._cache_argument).layers]
        n, length, width = len(branches), len(sequence), max(len(suffix) for _, suffix in branches)
        suffixes = torch.full((n, width), pad_id, dtype=torch.long)
        mask = torch.zeros(n, length + width, dtype=torch.long)
        for row, (position, suffix) in enumerate(branches):
            suffixes[row, : len(suffix)] = torch.tensor(suffix, dtype=torch.long)
            mask[row, : position + 1] = 1
            mask[row, length : length + len(suffix)] = 1
        starts = torch.tensor([position + 1 for position, _ in branches])
        hidden = self.lm.base_model(input_ids=suffixes.to(device), attention_mask=mask.to(device),
                                    position_ids=(starts[:, None] + torch.arange(width)).to(device), use_cache=True,
                                    **{self._cache_argument: self._cache(layers, n)}).last_hidden_state
        ends = torch.tensor([len(suffix) for _, suffix in branches])
        read = (ends[:, None] - reads + torch.arange(reads)).to(device)
        return self._logits(hidden[torch.arange(n, device=device)[:, None], read])

    def label_is_only_predicted(self, batch: PromptBatch) -> bool:
        """A one-token label read by label_likelihood, with nothing label-dependent before it: the prompt never sees
        the label, so its prediction at the slot is the same for every label (`label_free_slot_logits`)."""
        return (self.builder.readout == "label_likelihood" and batch.label_positions.shape[1] == 1
                and batch.label_article_positions is None)

    def word_follows_one_stem(self, batch: PromptBatch) -> bool:
        """example_likelihood where every prompt is the same up to its word and the word is one token (word lists: no
        context): the word's log p is a column of the stem's next-token distribution, so one forward per label scores
        every example (`_word_after_each_label`) instead of one per (label, example)."""
        if self.builder.readout != "example_likelihood" or batch.word_starts is None:
            return False
        start = batch.word_starts[0]
        return bool((batch.word_starts == start).all() and (batch.readout_positions == start).all()
                    and (batch.input_ids[:, :start] == batch.input_ids[:1, :start]).all())

    def _word_after_each_label(self, batch: PromptBatch, label_embeddings: torch.Tensor, rows: torch.Tensor,
                               examples: torch.Tensor, an_weights: torch.Tensor | None, with_slot_logits: bool
                               ) -> DiscriminatorOutput:
        """The example_likelihood readout of every item from one forward of the shared stem per label row used
        (see `word_follows_one_stem`): log p(word | stem with the label) - log p(word | the neutral prompt)."""
        used, item_row = rows.unique(return_inverse=True)
        n, start = len(used), int(batch.word_starts[0])
        embed = self.lm.get_input_embeddings()
        stem = batch.input_ids[:1, :start]
        inputs = embed(stem).expand(n, -1, -1)
        positions = batch.label_positions[0]
        inputs = inputs.index_put((torch.arange(n, device=stem.device)[:, None].expand(n, len(positions)), positions.expand(n, -1)),
                                  (label_embeddings[used] * self.input_scale).to(inputs.dtype))
        if batch.label_article_positions is not None:
            a_row, an_row = (embed.weight[ids[0]] for ids in (self.builder.label_article_ids["a"], self.builder.label_article_ids["an"]))
            article = (a_row + an_weights[used, None].to(inputs.dtype) * (an_row - a_row)) * self.input_scale
            inputs = inputs.index_put((torch.arange(n, device=stem.device), batch.label_article_positions[0].expand(n)), article)
        template = self._template_prefix()
        past = None if template is None else self._cache(template, n)
        hidden = self.lm.base_model(inputs_embeds=inputs, use_cache=True, **{self._cache_argument: past}).last_hidden_state
        log_p = torch.log_softmax(self._logits(hidden[:, -1]).float(), dim=-1)  # [n, V]: every word after each label
        words = batch.input_ids[examples, start]
        scores = log_p[item_row, words] - self._neutral_log_likelihood(batch)[examples]
        if not with_slot_logits:
            return DiscriminatorOutput(scores=scores, slot_logits=None)
        before = (positions - 1).expand(n, -1)
        slot_logits = self._logits(self._slot_hidden(hidden, None, before, torch.arange(n, device=stem.device), 0))
        return DiscriminatorOutput(scores=scores, slot_logits=slot_logits, slot_rows=item_row)

    @torch.no_grad()
    def label_free_slot_logits(self, batch: PromptBatch) -> torch.Tensor:
        """[N, V] each prompt's next-token logits at its label slot (see `label_is_only_predicted`). The LM is frozen,
        so they are kept per distinct prompt (least recently used dropped beyond `slot_cache_bytes`): a word drawn
        again, by a later step or another feature, costs no forward."""
        before = batch.label_positions[:, 0] - 1  # the token that predicts the label
        keys = [tuple(row[: int(end) + 1].tolist()) for row, end in zip(batch.input_ids, before)]
        found = {}
        for key in dict.fromkeys(keys):
            if key in self._slot_cache:
                self._slot_cache.move_to_end(key)
                found[key] = self._slot_cache[key]
        missing = [key for key in dict.fromkeys(keys) if key not in found]
        if missing:
            rows = torch.tensor([keys.index(key) for key in missing], device=before.device)
            computed = self.next_token_logits(batch.input_ids[rows], before[rows])
            for key, logits in zip(missing, computed):
                found[key] = self._slot_cache[key] = logits.clone()  # its own storage, so dropping it frees it
            while self._slot_cache and len(self._slot_cache) * computed[0].nbytes > self.slot_cache_bytes:
                self._slot_cache.popitem(last=False)
        return torch.stack([found[key] for key in keys])

    def next_token_logits(self, input_ids: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
        """[n, V] the next-token logits after position `before` [n] of each row, one forward for all rows, nothing
        kept (`label_free_slot_logits` keeps them)."""
        # Causal attention: what comes at and after each prompt's label slot cannot change the states before it.
        end = max(int(before.max()) + 1, 1)
        _, hidden = self._run_prompts(input_ids[:, :end])
        return self._logits(self._slot_hidden(hidden, None, before[:, None], torch.arange(input_ids.shape[0], device=before.device), 0))[:, 0]

    def _single_label_likelihood(self, batch: PromptBatch, examples: torch.Tensor, rows: torch.Tensor,
                                 label_probs: torch.Tensor | None, label_tokens: torch.Tensor | None,
                                 with_slot_logits: bool) -> DiscriminatorOutput:
        """log q(label | prompt) per (prompt, label) item: a dot product of p with the prompt's label-free log q, so
        the gradient reaches p directly and nothing runs per item."""
        prompt_logits = self.label_free_slot_logits(batch)
        log_q = torch.log_softmax(prompt_logits.float(), dim=-1)  # [N, V]
        if label_tokens is not None:
            scores = log_q[examples, label_tokens[rows, 0]]
        else:
            scores = (log_q @ label_probs[:, 0].float().T)[examples, rows]  # [N, R] then each item's cell
        if not with_slot_logits:
            return DiscriminatorOutput(scores=scores, slot_logits=None)
        # Per prompt, not per item: restarts and features asking about the same prompt share its row.
        return DiscriminatorOutput(scores=scores, slot_logits=prompt_logits[:, None], slot_rows=examples)

    def _span_log_likelihood(self, hidden: torch.Tensor, ids: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor,
                             offset: int) -> torch.Tensor:
        """[n] log p(ids[i, starts[i]..ends[i]]) from `hidden` [n, T, d], which holds positions `offset` on."""
        width = int((ends - starts).max()) + 1
        steps = starts[:, None] + torch.arange(width, device=ids.device)  # [n, W]
        valid = steps <= ends[:, None]
        positions = torch.minimum(steps, ends[:, None])
        row = torch.arange(ids.shape[0], device=ids.device)[:, None]
        log_p = torch.log_softmax(self._logits(hidden[row, positions - 1 - offset]).float(), dim=-1)
        picked = log_p.gather(-1, ids[row, positions][..., None]).squeeze(-1)
        return (picked * valid).sum(-1)

    @torch.no_grad()
    def _neutral_log_likelihood(self, batch: PromptBatch) -> torch.Tensor:
        """[N] each prompt's word log-likelihood in the label-free template, computed once per distinct prompt."""
        keys = [tuple(row[: int(end) + 1].tolist()) for row, end in zip(batch.neutral_ids, batch.neutral_ends)]
        missing = [index for index, key in enumerate(dict.fromkeys(keys)) if key not in self._neutral_cache]
        if missing:
            unique = list(dict.fromkeys(keys))
            first = {key: keys.index(key) for key in unique}
            index = torch.tensor([first[unique[m]] for m in missing], device=batch.neutral_ids.device)
            ids = batch.neutral_ids[index]
            hidden = self.lm.base_model(input_ids=ids).last_hidden_state
            values = self._span_log_likelihood(hidden, ids, batch.neutral_word_starts[index], batch.neutral_ends[index], offset=0)
            for m, value in zip(missing, values.tolist()):
                self._neutral_cache[unique[m]] = value
        return torch.tensor([self._neutral_cache[key] for key in keys], device=batch.neutral_ids.device)

    def _slot_hidden(self, tail: torch.Tensor, head: torch.Tensor | None, before: torch.Tensor, examples: torch.Tensor,
                     split: int) -> torch.Tensor:
        """Hidden states of the tokens `before` [items, L] each label slot, which predict it: from the second pass,
        the first pass (detached: the prior is no training target), or the template prefix's last token."""
        item_index = torch.arange(before.shape[0], device=before.device)[:, None].expand_as(before)
        hidden = tail[item_index, (before - split).clamp(min=0)]
        if head is not None:
            from_head = head[examples[:, None].expand_as(before), before.clamp(0, split - 1)]
            hidden = torch.where((before < split)[..., None], from_head, hidden)
        if bool((before < 0).any()):
            if self._prefix_last_hidden is None:
                raise GradspaceError("the label is the prompt's first token, so nothing predicts it for the naturalness prior; "
                                     "put text before {label} or set label.kl_weight=0")
            hidden = torch.where((before < 0)[..., None], self._prefix_last_hidden, hidden)
        return hidden
