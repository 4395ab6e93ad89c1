"""Every live latent of an SAE labelled by the exact scan of a word-alone readout that only predicts the label.

The readout sees a token alone ("<word> is a kind of <label>"), so its log q table has one row per distinct token
of the corpus, computed once for all latents. A latent's examples are token occurrences; those of one token share
its row, so each latent's objective over every allowed label is the weighted scan (`scan.column_objectives` with
each row weighted by its occurrences): a few vectorised reductions per latent, no forward. What a word-alone
readout cannot see, the context, is what each latent's `word_alone_auroc` measures: the held-out AUROC of the token's
own firing rate (near 0.5: the latent is about context and no word-alone label can name it).
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
from gradspace.labeling.prompts import Example
from gradspace.labeling.scan import COLUMNS_PER_CHUNK, column_objectives

log = logging.getLogger(__name__)


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
    """log q(label | "<token> is a kind of") for every distinct token of the corpus over the allowed labels, in
    float32 (float16 would round away the small differences between examples that the calibration divides by), and each row's log-sum-exp over the allowed labels (the naturalness prior is log q minus it)."""

    def __init__(self, discriminator: Discriminator, tokens: torch.Tensor, allowed: torch.Tensor, batch: int = 256):
        self.tokens = tokens
        self.index = {int(t): row for row, t in enumerate(tokens.tolist())}
        self.allowed = allowed.nonzero().flatten()
        builder = discriminator.builder
        device = discriminator.embedding.device
        # Filled in place: a concatenation of the chunks would hold the table twice at its peak.
        self.log_q = torch.empty(len(tokens), len(self.allowed))  # [U, A]
        self.normaliser = torch.empty(len(tokens))  # [U]
        for start in range(0, len(tokens), batch):
            examples = [Example(int(t)) for t in tokens[start : start + batch]]
            prompts = builder.batch(examples, builder.tokenizer.pad_token_id).to(device)
            logits = discriminator._slot_logits(prompts.input_ids, prompts.label_positions[:, 0] - 1).float()
            log_q = torch.log_softmax(logits, dim=-1)[:, self.allowed.to(device)]
            self.log_q[start : start + len(examples)] = log_q.cpu()
            self.normaliser[start : start + len(examples)] = torch.logsumexp(log_q, dim=-1).cpu()

    def rows(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.tensor([self.index[int(t)] for t in tokens.tolist()], dtype=torch.long)

    def objectives(self, rows: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, kl_weight: float) -> torch.Tensor:
        """[A] the weighted scan's objective of every allowed label over the table `rows`, a block of columns at a
        time: a dense latent has thousands of distinct tokens, and its whole [rows × labels] slice, a few times over
        in the reductions' temporaries, would outgrow the table itself."""
        out = []
        for start in range(0, self.log_q.shape[1], COLUMNS_PER_CHUNK):
            log_q = self.log_q[rows, start : start + COLUMNS_PER_CHUNK]
            surprisal = self.normaliser[rows, None] - log_q  # -log of q renormalised over the allowed labels
            out.append(column_objectives(log_q, surprisal, targets, kl_weight, weights, dtype=torch.float32))
        return torch.cat(out)


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
    table = TokenTable(discriminator, torch.cat([train_tokens, heldout_tokens]).unique(), allowed)
    table_seconds = time.perf_counter() - start
    log.info("the token table: %d tokens x %d allowed labels in %.0f s", len(table.tokens), len(table.allowed), table_seconds)
    allowed_ids = table.allowed
    generator = torch.Generator().manual_seed(seed)
    negative_pool = torch.randperm(len(train_tokens), generator=generator)[:negatives]
    heldout_pool = torch.randperm(len(heldout_tokens), generator=generator)
    train_firing, heldout_firing = firing_positions(train, threshold), firing_positions(heldout, threshold)
    train_rows, heldout_rows = table.rows(train_tokens), table.rows(heldout_tokens)
    words = lambda ids: [tokenizer.decode([int(t)]).strip() for t in ids]  # noqa: E731
    results = []
    for latent in range(train.shape[1]):
        if latent % 256 == 0:
            log.info("latent %d of %d: %d labelled, %.0f s", latent, train.shape[1], len(results), time.perf_counter() - start)
        fired = train_firing[latent]
        if len(fired) < min_firings:
            continue
        fired_mask = torch.zeros(len(train_tokens), dtype=torch.bool)
        fired_mask[fired] = True
        negative_positions = negative_pool[~fired_mask[negative_pool]]
        # Occurrences per table row, per class: the weights of the scan.
        positive_rows, positive_counts = train_rows[fired].unique(return_counts=True)
        negative_rows, negative_counts = train_rows[negative_positions].unique(return_counts=True)
        rows = torch.cat([positive_rows, negative_rows])
        weights = torch.cat([positive_counts, negative_counts]).double()
        targets = torch.cat([torch.ones(len(positive_rows)), torch.zeros(len(negative_rows))])
        objective = table.objectives(rows, targets, weights, kl_weight)
        best = int(objective.argmin())
        label_token = int(allowed_ids[best])

        # Held out: up to heldout_max occurrences per class, each scored by its token's row.
        held_fired = heldout_firing[latent]
        held_mask = torch.zeros(len(heldout_tokens), dtype=torch.bool)
        held_mask[held_fired] = True
        held_positive = held_fired[torch.randperm(len(held_fired), generator=generator)[:heldout_max]]
        held_negative = heldout_pool[~held_mask[heldout_pool]][:heldout_max]
        held_targets = torch.cat([torch.ones(len(held_positive)), torch.zeros(len(held_negative))]).long()
        held_rows = heldout_rows[torch.cat([held_positive, held_negative])]

        def heldout_auroc(column: int) -> float | None:
            if not len(held_positive) or not len(held_negative):
                return None
            return float(binary_auroc(table.log_q[held_rows, column].float(), held_targets))

        column_of = {int(t): c for c, t in enumerate(allowed_ids.tolist())}
        counts = torch.bincount(train_tokens[fired])
        top = counts.argsort(descending=True)[:10]
        top = top[counts[top] > 0]
        frequent = next((int(t) for t in top.tolist() if int(t) in column_of), None)
        projection = unembedding.float() @ decoder[latent].float().to(unembedding.device)
        projected = int(allowed_ids[projection[allowed_ids.to(projection.device)].argmax().cpu()])
        baselines = {"most_frequent_top_activating": None if frequent is None else
                     {"label": words([frequent])[0], "heldout_auroc": heldout_auroc(column_of[frequent])},
                     "vocabulary_projection": {"label": words([projected])[0], "heldout_auroc": heldout_auroc(column_of[projected])}}
        # The token alone: its training firing rate, held out.
        rate = torch.bincount(train_tokens[fired], minlength=len(tokenizer)).double() / torch.bincount(
            train_tokens, minlength=len(tokenizer)).double().clamp(min=1)
        held_tokens = heldout_tokens[torch.cat([held_positive, held_negative])]
        word_alone = (float(binary_auroc(rate[held_tokens], held_targets))
                      if len(held_positive) and len(held_negative) else None)
        results.append(LatentLabel(
            latent=latent, density=len(fired) / len(train_tokens), top_words=words(top[:5]),
            label=words([label_token])[0], objective=float(objective[best]), heldout_auroc=heldout_auroc(best),
            word_alone_auroc=word_alone, baselines=baselines,
            heldout_examples={"positive": len(held_positive), "negative": len(held_negative)}))
    timings = {"table_seconds": table_seconds, "table_rows": len(table.tokens), "label_seconds": time.perf_counter() - start - table_seconds}
    return results, timings
