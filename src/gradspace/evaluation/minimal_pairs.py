"""Batched, length-sorted minimal-pair evaluation.

A sentence's score is the sum of its token log-probabilities given the model's document-start token
(`prefix_token_id`), the lm-evaluation-harness convention for BLiMP; a pair is right when the good sentence scores higher.
The two sentences of a pair share their tokens up to the first one where they differ; `score_pairs` runs that shared
prefix once and both continuations from its key/value cache.
"""

from __future__ import annotations

import inspect
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from gradspace.evaluation.logprobs import (
    encode_with_prefix,
    logit_positions_per_pass,
    pad_sequences,
    pad_token_id,
    scored_batches,
    target_logprobs,
)
from gradspace.evaluation.metrics import MinimalPairScore
from gradspace.models.kv_cache import cache_argument_name
from gradspace.pairs import MinimalPair

# Layer kinds whose attention depends only on distances between real tokens and on the attention mask, so a cached,
# padded prefix gives the same result as the unpadded sentence. Recurrent ("linear", "mamba") and chunked layers do not.
CACHE_SAFE_LAYER_TYPES = {"full_attention", "sliding_attention"}
# A forward pass costs about as much as this many more positions in it, on one CPU thread (measured: a pass over n
# positions took about 80 ms + 3.4 ms x n for SmolLM2-135M, 150 ms + 6 ms x n for Gemma-3-270M).
FORWARD_COST_IN_POSITIONS = 24


@dataclass
class TaskScore:
    accuracy: float
    margin: float
    pairs: int


@dataclass
class EvaluationResult:
    tasks: dict[str, TaskScore]
    phenomena: dict[str, str]  # task -> phenomenon
    pairs_per_second: float
    overall: TaskScore = field(init=False)

    def __post_init__(self) -> None:
        total = sum(score.pairs for score in self.tasks.values())
        self.overall = TaskScore(
            accuracy=sum(s.accuracy * s.pairs for s in self.tasks.values()) / max(total, 1),
            margin=sum(s.margin * s.pairs for s in self.tasks.values()) / max(total, 1),
            pairs=total,
        )

    def as_metrics(self, prefix: str) -> dict[str, float]:
        """Flat `prefix/accuracy/<task>`-style keys for loggers, plus the overall scores."""
        metrics = {f"{prefix}/accuracy": self.overall.accuracy, f"{prefix}/margin": self.overall.margin}
        for task, score in self.tasks.items():
            metrics[f"{prefix}/accuracy/{task}"] = score.accuracy
            metrics[f"{prefix}/margin/{task}"] = score.margin
        return metrics

    def to_dict(self) -> dict:
        return {
            "overall": vars(self.overall),
            "tasks": {task: vars(score) for task, score in self.tasks.items()},
            "phenomena": dict(self.phenomena),
            "pairs_per_second": self.pairs_per_second,
        }


def score_sentences(model, tokenizer, sentences: list[str], batch_size: int = 64, desc: str | None = None) -> torch.Tensor:
    """Summed log-probability of every sentence, computed in length-sorted batches (little padding)."""
    scores = torch.empty(len(sentences), dtype=torch.float64)
    for chunk, logprobs, _ in scored_batches(model, tokenizer, sentences, batch_size, desc):
        scores[chunk] = logprobs.sum(dim=-1).double().cpu()
    return scores


def shared_prefix_cache_argument(model) -> str | None:
    """The name of the forward argument through which `model` continues from a key/value cache (`cache` in
    transformers 5.2x, `past_key_values` before), when its scores can be computed from a shared cached prefix;
    None when they cannot: no cache, position ids or attention mask among its forward arguments, an encoder-decoder,
    or layers other than full and sliding-window attention (see CACHE_SAFE_LAYER_TYPES)."""
    parameters = inspect.signature(model.forward).parameters
    cache_argument = cache_argument_name(model)
    layer_types = set(getattr(model.config, "layer_types", None) or ())
    if cache_argument is None or not {"attention_mask", "position_ids"} <= parameters.keys():
        return None
    if getattr(model.config, "is_encoder_decoder", False) or not layer_types <= CACHE_SAFE_LAYER_TYPES:
        return None
    return cache_argument


@dataclass
class PairTokens:
    shared: list[int]  # the tokens both sentences start with, the document-start token first
    good: list[int]  # the good sentence's tokens after `shared` (empty when it ends there)
    bad: list[int]

    @property
    def fed_length(self) -> int:
        """Positions of the longer continuation that are fed to the model: all but its last token."""
        return max(len(self.good), len(self.bad), 1) - 1


def split_pair_tokens(good: list[int], bad: list[int]) -> PairTokens:
    common = 0
    while common < min(len(good), len(bad)) and good[common] == bad[common]:
        common += 1
    return PairTokens(good[:common], good[common:], bad[common:])


def pair_batches(tokens: list[PairTokens], pairs_per_batch: int, max_logit_positions: int | None = None,
                 prefix_logits: bool = True) -> list[list[int]]:
    """Pair indices in batches: sorted by the lengths that get padded (the longer continuation, then the shared
    prefix), cut where padded positions plus FORWARD_COST_IN_POSITIONS per forward pass add up to the least
    (dynamic programming over the cut points), at most `pairs_per_batch` pairs each and, with
    `max_logit_positions`, at most that many positions with logits in one forward pass (the continuations' two
    rows per pair, and the prefixes' when `prefix_logits`)."""
    order = sorted(range(len(tokens)), key=lambda i: (tokens[i].fed_length, len(tokens[i].shared)), reverse=True)
    widths = [len(tokens[i].shared) for i in order]
    lengths = [tokens[i].fed_length for i in order]
    cost = [0.0] + [math.inf] * len(order)  # cost[end]: the cheapest batching of order[:end]
    cut = [0] * (len(order) + 1)  # where the last batch of that batching starts
    for end in range(1, len(order) + 1):
        width = length = 0
        for start in range(end - 1, max(end - pairs_per_batch, 0) - 1, -1):
            width, length = max(width, widths[start]), max(length, lengths[start])
            logit_positions = (end - start) * (2 * max(length, 1) + (width if prefix_logits else 0))
            if max_logit_positions is not None and start < end - 1 and logit_positions > max_logit_positions:
                break
            passes = 2 if length else 1
            total = cost[start] + (end - start) * (width + 2 * length) + passes * FORWARD_COST_IN_POSITIONS
            if total < cost[end]:
                cost[end], cut[end] = total, start
    batches, end = [], len(order)
    while end:
        batches.append(order[cut[end] : end])
        end = cut[end]
    return batches[::-1]


def _score_shared_prefix_batch(model, cache_argument: str, batch: list[PairTokens], pad_id: int, device,
                               include_shared_prefix: bool, last_logits_only: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probabilities (good, bad) of a batch of pairs: one pass over the shared prefixes, one over both
    continuations of every pair from the prefix cache repeated per sentence. The last token of a sentence is never
    fed, so every position fed is scored; with `last_logits_only` (only without `include_shared_prefix`) the prefix
    pass computes the logits of its last position only, through the model's public `logits_to_keep` argument."""
    rows = len(batch)
    # Prefixes are left-padded: every row's last shared token sits in the last column, whose prediction is the
    # first token where the pair differs, and cached positions are as far apart as in the sentence, which keeps
    # sliding-window layers exact.
    width = max(len(pair.shared) for pair in batch)
    prefix_ids = torch.full((rows, width), pad_id, dtype=torch.long)
    prefix_mask = torch.zeros((rows, width), dtype=torch.long)
    for row, pair in enumerate(batch):
        prefix_ids[row, width - len(pair.shared) :] = torch.tensor(pair.shared, dtype=torch.long)
        prefix_mask[row, width - len(pair.shared) :] = 1
    prefix_ids, prefix_mask = prefix_ids.to(device), prefix_mask.to(device)
    prefix_positions = (prefix_mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=prefix_ids, attention_mask=prefix_mask, position_ids=prefix_positions, use_cache=True,
                **({"logits_to_keep": 1} if last_logits_only else {}))
    scores = torch.zeros(2 * rows, device=device)
    if include_shared_prefix:
        shared = (target_logprobs(out.logits[:, :-1], prefix_ids[:, 1:]) * prefix_mask[:, :-1]).sum(-1)
        scores += shared.repeat_interleave(2)

    # Row 2i is pair i's good continuation, row 2i+1 its bad one. Its first token is predicted by the prefix's last
    # position, the rest by feeding the continuation without its last token.
    continuations = [tokens for pair in batch for tokens in (pair.good, pair.bad)]
    first_ids = torch.tensor([tokens[0] if tokens else pad_id for tokens in continuations], device=device)
    first_mask = torch.tensor([bool(tokens) for tokens in continuations], device=device)
    last_logits = out.logits[:, -1:].repeat_interleave(2, dim=0)  # [2 * rows, 1, vocabulary]
    scores += target_logprobs(last_logits, first_ids[:, None])[:, 0] * first_mask

    length = max(pair.fed_length for pair in batch)
    if length:
        suffixes = pad_sequences(continuations, pad_id).to(device)  # length + 1 columns: the longest continuation
        suffix_ids, suffix_mask = suffixes.input_ids, suffixes.attention_mask
        cache = getattr(out, cache_argument)
        cache.batch_repeat_interleave(2)
        positions = prefix_mask.sum(-1).repeat_interleave(2)[:, None] + torch.arange(length, device=device)
        attention = torch.cat([prefix_mask.repeat_interleave(2, dim=0), suffix_mask[:, :-1]], dim=-1)
        logits = model(input_ids=suffix_ids[:, :-1], attention_mask=attention, position_ids=positions,
                       use_cache=True, **{cache_argument: cache}).logits
        scores += (target_logprobs(logits, suffix_ids[:, 1:]) * suffix_mask[:, 1:]).sum(-1)
    return scores[0::2], scores[1::2]


@torch.no_grad()
def score_pairs(model, tokenizer, pairs: list[MinimalPair], batch_size: int = 64, desc: str | None = None,
                shared_prefix: bool = True, include_shared_prefix: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probabilities of the good and of the bad sentence of every pair, float64, in pair order.

    `batch_size` counts sentences per forward pass (half as many pairs; fewer where their logits would pass
    `LOGITS_PER_PASS`). With `shared_prefix` and a model that
    `shared_prefix_cache_argument` accepts (GPT-NeoX, Llama, Gemma 3 and most decoder-only attention models), each
    pair's shared prefix is run once and both continuations from its cache (`pair_batches` groups the pairs);
    otherwise every sentence is scored on its own (`score_sentences`): the same scores up to float rounding, with
    more work. Without `include_shared_prefix` the cached path leaves the shared prefix's log-probability out of
    both scores, which changes no margin and no decision and skips its logits. With `desc`, a progress bar counts
    pairs; it appears only when scoring takes more than two seconds.
    """
    cache_argument = shared_prefix_cache_argument(model) if shared_prefix else None
    if cache_argument is None:
        scores = score_sentences(model, tokenizer, [p.good for p in pairs] + [p.bad for p in pairs], batch_size, desc)
        return scores[: len(pairs)], scores[len(pairs) :]
    good_ids = encode_with_prefix(tokenizer, [pair.good for pair in pairs])
    bad_ids = encode_with_prefix(tokenizer, [pair.bad for pair in pairs])
    tokens = [split_pair_tokens(good, bad) for good, bad in zip(good_ids, bad_ids)]
    device = next(model.parameters()).device
    pad_id = pad_token_id(tokenizer)
    last_logits_only = not include_shared_prefix and "logits_to_keep" in inspect.signature(model.forward).parameters
    good, bad = torch.empty(len(pairs), dtype=torch.float64), torch.empty(len(pairs), dtype=torch.float64)
    with tqdm(total=len(pairs), desc=desc, unit="pair", disable=desc is None, delay=2.0, leave=False, dynamic_ncols=True) as bar:
        batches = pair_batches(tokens, max(1, batch_size // 2), logit_positions_per_pass(model),
                               prefix_logits=not last_logits_only)
        for chunk in batches:
            batch_good, batch_bad = _score_shared_prefix_batch(
                model, cache_argument, [tokens[i] for i in chunk], pad_id, device, include_shared_prefix, last_logits_only
            )
            good[chunk], bad[chunk] = batch_good.double().cpu(), batch_bad.double().cpu()
            bar.update(len(chunk))
    return good, bad


def evaluate_pairs(model, tokenizer, pairs: list[MinimalPair], batch_size: int = 64, desc: str | None = None,
                   shared_prefix: bool = True) -> EvaluationResult:
    """Accuracy and mean margin per task (scores from `score_pairs`); the model is put in eval mode and restored
    afterwards."""
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    # Margins and decisions need no shared-prefix log-probabilities: they are the same for both sentences.
    good, bad = score_pairs(model, tokenizer, pairs, batch_size=batch_size, desc=desc, shared_prefix=shared_prefix,
                            include_shared_prefix=False)
    elapsed = time.perf_counter() - start
    model.train(was_training)

    by_task: dict[str, list[int]] = defaultdict(list)
    for index, pair in enumerate(pairs):
        by_task[pair.task].append(index)
    tasks = {}
    for task, indices in by_task.items():
        # Every process scores the full list, so summing across processes would count each pair once per process.
        metric = MinimalPairScore(sync_on_compute=False)
        metric.update(good[indices], bad[indices])
        computed = metric.compute()
        tasks[task] = TaskScore(float(computed["accuracy"]), float(computed["margin"]), int(computed["pairs"]))
    phenomena = {pair.task: pair.phenomenon for pair in pairs}
    return EvaluationResult(tasks=tasks, phenomena=phenomena, pairs_per_second=len(pairs) / max(elapsed, 1e-9))
