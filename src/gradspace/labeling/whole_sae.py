"""Every live latent of an SAE labelled by the exact scan of a word-alone readout that only predicts the label.

The readout sees a token alone ("<word> is a kind of <label>"), so its log q table has one row per distinct token
of the training texts, computed once for all latents. A latent's examples are token occurrences; those of one token
share its row, so each latent's objective over every allowed label is the weighted scan (`objective.column_objectives`
with each row weighted by its occurrences): a few vectorised reductions per latent, no forward. Held-out tokens the
training texts lack get a second table afterwards, over only the labels the latents chose (their label and
baselines): the full table of every held-out token would add a third to the memory for a few columns of it. What a
word-alone readout cannot see, the context, is what each latent's `word_alone_auroc` measures: the held-out AUROC of
the token's own firing rate (near 0.5: the latent is about context and no word-alone label can name it).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
from torchmetrics.functional.classification import binary_auroc

from gradspace.labeling.discriminator import Discriminator
from gradspace.labeling.features import TextCodes
from gradspace.labeling.objective import column_objectives
from gradspace.labeling.prompts import Example

log = logging.getLogger(__name__)
# Columns of a latent's table slice reduced at once: its rows (thousands of distinct tokens for a dense latent) ×
# this many floats, a few times over in the reductions' temporaries.
COLUMNS_PER_CHUNK = 4096


@dataclass
class LatentLabel:
    latent: int
    density: float  # share of training tokens it fires on
    top_words: list[str]  # the tokens it fires on most often, most first
    label: str
    objective: float
    heldout_auroc: float | None
    word_alone_auroc: float | None  # the token's training firing rate as the predictor, held out
    baselines: dict  # kind -> {"label", "heldout_auroc"}
    heldout_examples: dict

    def as_dict(self) -> dict:
        return asdict(self)


class TokenTable:
    """log q(label | "<token> is a kind of") for distinct tokens (rows) over label tokens (columns), in float32
    (float16 would round log q to about 0.01 nats, which the calibration divides by the spread between examples),
    and each row's log-sum-exp over the columns (with every allowed label as columns, the naturalness prior is log q
    minus it). Filled in place: a concatenation of the batches would hold the table twice at its peak."""

    def __init__(self, discriminator: Discriminator, tokens: torch.Tensor, labels: torch.Tensor, batch: int = 256):
        self.index = {int(t): row for row, t in enumerate(tokens.tolist())}
        self.column = {int(t): column for column, t in enumerate(labels.tolist())}
        self.labels = labels
        builder = discriminator.builder
        device = discriminator.embedding.device
        self.log_q = torch.empty(len(tokens), len(labels))  # [U, C]
        self.normaliser = torch.empty(len(tokens))  # [U]
        for start in range(0, len(tokens), batch):
            examples = [Example(int(t)) for t in tokens[start : start + batch]]
            prompts = builder.batch(examples, builder.tokenizer.pad_token_id).to(device)
            logits = discriminator.next_token_logits(prompts.input_ids, prompts.label_positions[:, 0] - 1).float()
            log_q = torch.log_softmax(logits, dim=-1)[:, labels.to(device)]
            self.log_q[start : start + len(examples)] = log_q.cpu()
            self.normaliser[start : start + len(examples)] = torch.logsumexp(log_q, dim=-1).cpu()

    def rows(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.tensor([self.index[int(t)] for t in tokens.tolist()], dtype=torch.long)

    def objectives(self, rows: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, kl_weight: float) -> torch.Tensor:
        """[C] the weighted scan's objective of every label over the table `rows`, a block of columns at a time."""
        out = []
        for start in range(0, self.log_q.shape[1], COLUMNS_PER_CHUNK):
            log_q = self.log_q[rows, start : start + COLUMNS_PER_CHUNK]
            surprisal = self.normaliser[rows, None] - log_q  # -log of q renormalised over the allowed labels
            out.append(column_objectives(log_q, surprisal, targets, kl_weight, weights, dtype=torch.float32))
        return torch.cat(out)


class HeldoutScores:
    """log q(label | token) for held-out tokens: from the training table where it has the token, else from a table
    of the tokens it lacks over only the `labels` asked for."""

    def __init__(self, discriminator: Discriminator, train: TokenTable, heldout_tokens: torch.Tensor, labels: torch.Tensor):
        self.train = train
        unseen = torch.tensor([t for t in heldout_tokens.unique().tolist() if t not in train.index], dtype=torch.long)
        self.unseen = TokenTable(discriminator, unseen, labels)

    def __call__(self, tokens: torch.Tensor, label: int) -> torch.Tensor:
        return torch.tensor([float(self.train.log_q[self.train.index[t], self.train.column[label]]) if t in self.train.index
                             else float(self.unseen.log_q[self.unseen.index[t], self.unseen.column[label]])
                             for t in tokens.tolist()])


def flatten(codes: Sequence[TextCodes]) -> tuple[torch.Tensor, torch.Tensor]:
    """All texts' tokens [T] and codes [T, d_sae] (sparse COO) in one."""
    tokens = torch.tensor([t for ids, _ in codes for t in ids], dtype=torch.long)
    return tokens, torch.cat([c for _, c in codes]).coalesce()


def firing_positions(codes: torch.Tensor, threshold: float) -> list[torch.Tensor]:
    """Per latent, the positions (rows) where it fires above `threshold`."""
    indices, values = codes.indices(), codes.values()
    keep = values > threshold
    rows, latents = indices[0, keep], indices[1, keep]
    order = latents.argsort(stable=True)
    counts = torch.bincount(latents, minlength=codes.shape[1]).tolist()
    return list(rows[order].split(counts))


@dataclass
class TrainingPick:
    """What a latent's training firings choose: its label and its baselines' labels (token ids), before scoring."""

    latent: int
    fired: torch.Tensor  # training positions where it fires
    label: int
    objective: float
    most_frequent: int | None  # its most frequent top-activating token that is an allowed label
    projection: int  # the allowed label of highest W_U · W_dec[latent]
    top_tokens: list[int]


def pick_label(table: TokenTable, latent: int, fired: torch.Tensor, train_tokens: torch.Tensor, train_rows: torch.Tensor,
               negative_pool: torch.Tensor, projection: torch.Tensor, kl_weight: float) -> TrainingPick:
    """The scan over a latent's training firings (each token's row weighted by its occurrences) against the shared
    random positions where it does not fire."""
    fired_mask = torch.zeros(len(train_tokens), dtype=torch.bool)
    fired_mask[fired] = True
    negative_positions = negative_pool[~fired_mask[negative_pool]]
    positive_rows, positive_counts = train_rows[fired].unique(return_counts=True)
    negative_rows, negative_counts = train_rows[negative_positions].unique(return_counts=True)
    rows = torch.cat([positive_rows, negative_rows])
    weights = torch.cat([positive_counts, negative_counts]).double()
    targets = torch.cat([torch.ones(len(positive_rows)), torch.zeros(len(negative_rows))])
    objective = table.objectives(rows, targets, weights, kl_weight)
    best = int(objective.argmin())
    counts = torch.bincount(train_tokens[fired])
    top = counts.argsort(descending=True)[:10]
    top = top[counts[top] > 0].tolist()
    return TrainingPick(latent=latent, fired=fired, label=int(table.labels[best]), objective=float(objective[best]),
                        most_frequent=next((t for t in top if t in table.column), None),
                        projection=int(table.labels[projection[table.labels].argmax()]), top_tokens=top)


def score_heldout(pick: TrainingPick, scores: HeldoutScores, heldout_tokens: torch.Tensor, held_fired: torch.Tensor,
                  heldout_pool: torch.Tensor, firing_rate: torch.Tensor, heldout_max: int, generator: torch.Generator,
                  words, density: float) -> LatentLabel:
    """The latent's label and baselines scored on up to `heldout_max` held-out occurrences per class."""
    held_mask = torch.zeros(len(heldout_tokens), dtype=torch.bool)
    held_mask[held_fired] = True
    positive = held_fired[torch.randperm(len(held_fired), generator=generator)[:heldout_max]]
    negative = heldout_pool[~held_mask[heldout_pool]][:heldout_max]
    targets = torch.cat([torch.ones(len(positive)), torch.zeros(len(negative))]).long()
    tokens = heldout_tokens[torch.cat([positive, negative])]
    scored = len(positive) > 0 and len(negative) > 0

    def auroc(values: torch.Tensor) -> float | None:
        return float(binary_auroc(values, targets)) if scored else None

    baselines = {"most_frequent_top_activating": None if pick.most_frequent is None else
                 {"label": words([pick.most_frequent])[0], "heldout_auroc": auroc(scores(tokens, pick.most_frequent))},
                 "vocabulary_projection": {"label": words([pick.projection])[0], "heldout_auroc": auroc(scores(tokens, pick.projection))}}
    return LatentLabel(latent=pick.latent, density=density, top_words=words(pick.top_tokens[:5]), label=words([pick.label])[0],
                       objective=pick.objective, heldout_auroc=auroc(scores(tokens, pick.label)),
                       word_alone_auroc=auroc(firing_rate[tokens]), baselines=baselines,
                       heldout_examples={"positive": len(positive), "negative": len(negative)})


def label_all_latents(discriminator: Discriminator, allowed: torch.Tensor, train_codes: Sequence[TextCodes],
                      heldout_codes: Sequence[TextCodes], decoder: torch.Tensor, unembedding: torch.Tensor, kl_weight: float,
                      threshold: float = 0.0, negatives: int = 1000, heldout_max: int = 150, min_firings: int = 5,
                      seed: int = 0) -> tuple[list[LatentLabel], dict]:
    """Every latent firing at least `min_firings` times on the training texts: its scan label on all its training
    firings against `negatives` random training positions where it does not fire, scored on up to `heldout_max`
    held-out positions per class; (labels, timings)."""
    tokenizer = discriminator.builder.tokenizer
    start = time.perf_counter()
    train_tokens, train = flatten(train_codes)
    heldout_tokens, heldout = flatten(heldout_codes)
    table = TokenTable(discriminator, train_tokens.unique(), allowed.nonzero().flatten())
    table_seconds = time.perf_counter() - start
    log.info("the token table: %d tokens x %d allowed labels in %.0f s", len(table.index), len(table.labels), table_seconds)
    generator = torch.Generator().manual_seed(seed)
    negative_pool = torch.randperm(len(train_tokens), generator=generator)[:negatives]
    heldout_pool = torch.randperm(len(heldout_tokens), generator=generator)
    train_rows = table.rows(train_tokens)
    picks = []
    for latent, fired in enumerate(firing_positions(train, threshold)):
        if latent % 256 == 0:
            log.info("latent %d of %d: %d labelled, %.0f s", latent, train.shape[1], len(picks), time.perf_counter() - start)
        if len(fired) >= min_firings:
            projection = (unembedding.float() @ decoder[latent].float().to(unembedding.device)).cpu()
            picks.append(pick_label(table, latent, fired, train_tokens, train_rows, negative_pool, projection, kl_weight))
    chosen = {t for p in picks for t in (p.label, p.projection, p.most_frequent) if t is not None}
    scores = HeldoutScores(discriminator, table, heldout_tokens, torch.tensor(sorted(chosen), dtype=torch.long))
    # The token alone: its training firing rate, held out.
    occurrences = torch.bincount(train_tokens, minlength=len(tokenizer)).double().clamp(min=1)
    words = lambda ids: [tokenizer.decode([int(t)]).strip() for t in ids]  # noqa: E731
    held_firing = firing_positions(heldout, threshold)
    results = [score_heldout(p, scores, heldout_tokens, held_firing[p.latent], heldout_pool,
                             torch.bincount(train_tokens[p.fired], minlength=len(tokenizer)).double() / occurrences,
                             heldout_max, generator, words, len(p.fired) / len(train_tokens)) for p in picks]
    timings = {"table_seconds": table_seconds, "table_rows": len(table.index), "heldout_table_rows": len(scores.unseen.index),
               "label_seconds": time.perf_counter() - start - table_seconds}
    return results, timings
