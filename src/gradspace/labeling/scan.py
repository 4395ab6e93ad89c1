"""The exact scan: every allowed token scored as the label by the discrete step's objective (gradspace.labeling.objective:
the midpoint-calibrated readout's balanced cross-entropy + `kl_weight` × naturalness), its minimum taken.

Where a one-token label is only predicted (`Discriminator.label_is_only_predicted`: the label_likelihood readout),
the readout of label t on example n is log q(t | prompt n), a column of the [examples × vocabulary] table of the
prompts' label-free log q, so the objective of every token is a few vectorised reductions over that table: exact,
with no optimisation and no candidate limit. Any other readout is scanned by scoring each allowed token as a hard
label through the LM, one forward per (token, example): exact too, and affordable where the vocabulary is small
(the synthetic world's 652 words).

The frequent-word scan (`frequent_tokens`) is the same scan over the 2,000 allowed words most frequent in English:
the baseline of a descent through a readout that reads the label, where scanning every token is not affordable.

Two-token labels (`beam_scan`): q(t1 t2 | prompt) = q(t1 | prompt) q(t2 | prompt t1), so for each first token of a
beam (the one-token scan's best) one forward per example gives the second token's whole column of the table; the
best (t1, t2) of the beam is exact given its first token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from gradspace.data.word_frequency import english_frequencies
from gradspace.labeling.discrete import HardLabelScorer
from gradspace.labeling.discriminator import Discriminator
from gradspace.labeling.objective import column_objectives, slot_log_prior

# Columns of the table reduced at once: [examples × columns] floats a few times over.
COLUMNS_PER_CHUNK = 8192


@dataclass
class ScanResult:
    label_ids: tuple[int, ...]
    objective: float
    # the best labels by objective, best first: (label ids, objective)
    ranking: list[tuple[tuple[int, ...], float]]
    n_scored: int  # labels scored
    seconds: float = 0.0


def _best(objective: torch.Tensor, labels: list[tuple[int, ...]], keep: int) -> list[tuple[tuple[int, ...], float]]:
    order = objective.argsort()[:keep].tolist()
    return [(labels[i], float(objective[i])) for i in order]


def table_objectives(log_q: torch.Tensor, prior: torch.Tensor, targets: torch.Tensor, tokens: torch.Tensor,
                     kl_weight: float, base: torch.Tensor | None = None, base_surprisal: torch.Tensor | None = None) -> torch.Tensor:
    """[len(tokens)] the objective of each token as the label's (last) token, from the table `log_q` [N, V] and the
    naturalness prior `prior` [N, V] (log q over the allowed tokens); `base` [N] adds the readout of the tokens
    before it and `base_surprisal` [N] their surprisal (two-token labels)."""
    device = log_q.device
    targets = targets.to(device)
    out = []
    for start in range(0, len(tokens), COLUMNS_PER_CHUNK):
        columns = tokens[start : start + COLUMNS_PER_CHUNK].to(device)
        scores = log_q[:, columns].double()
        surprisal = -prior[:, columns].double()
        if base is not None:
            scores = scores + base[:, None].double()
            surprisal = surprisal + base_surprisal[:, None].double()
        out.append(column_objectives(scores, surprisal, targets, kl_weight).cpu())
    return torch.cat(out)


def frequent_tokens(tokenizer, allowed: torch.Tensor, count: int) -> torch.Tensor:
    """The `count` allowed tokens whose words are most frequent in English (wordfreq), most frequent first (ties by
    token id; words wordfreq does not list are left out): the vocabulary of the frequent-word scan."""
    ids = allowed.nonzero().flatten().tolist()
    frequencies = english_frequencies([text.strip() for text in tokenizer.batch_decode([[t] for t in ids])])
    order = sorted((i for i in range(len(ids)) if frequencies[i] > 0), key=lambda i: (-frequencies[i], ids[i]))
    return torch.tensor([ids[i] for i in order[:count]], dtype=torch.long)


def vocabulary_scan(scorer: HardLabelScorer, keep: int = 16, tokens: torch.Tensor | None = None) -> ScanResult:
    """The one-token label of lowest objective on the scorer's examples, over every allowed token (or `tokens`)."""
    start = time.perf_counter()
    allowed = scorer.allowed.nonzero().flatten() if tokens is None else tokens
    labels = [(int(t),) for t in allowed.tolist()]
    label_free = scorer.label_free_log_q()
    if label_free is not None:
        log_q, prior = label_free
        objective = table_objectives(log_q, prior, scorer.targets, allowed, scorer.kl_weight)
    else:
        chunk = scorer.labels_per_forward
        objective = torch.cat([torch.tensor([s.objective for s in scorer.score_labels(labels[i : i + chunk])], dtype=torch.float64)
                               for i in range(0, len(labels), chunk)])
    ranking = _best(objective, labels, keep)
    return ScanResult(ranking[0][0], ranking[0][1], ranking, len(labels), time.perf_counter() - start)


@torch.no_grad()
def two_token_tables(discriminator: Discriminator, scorer: HardLabelScorer, first_tokens: list[int], max_floats: int = 2**26):
    """Per first token t1 of `first_tokens`, on every example of a two-token `scorer`: (t1, its readout log q(t1 |
    prompt) [N], its allowed-token prior [N], the second slot's log q(· | prompt t1) [N, V] and allowed-token prior
    [N, V]), one first token at a time. The prompts up to the label run once (grouped by where their label starts)
    and their key/value caches are kept; each first token then costs one one-token forward per example."""
    device = discriminator.embedding.device
    prompts = scorer.prompts.to(device)
    allowed = scorer.allowed.to(device)
    starts = prompts.label_positions[:, 0]
    n, vocabulary = len(starts), discriminator.embedding.shape[0]
    tokens = torch.tensor(first_tokens, dtype=torch.long, device=device)
    firsts, first_priors = torch.zeros(len(first_tokens), n), torch.zeros(len(first_tokens), n)
    heads = []  # (example rows, key/value layers of their prompts up to the label)
    for start in starts.unique().tolist():
        for chunk in (starts == start).nonzero().flatten().split(max(1, max_floats // vocabulary)):
            layers, logits = discriminator.prompt_cache(prompts.input_ids[chunk, :start])
            heads.append((chunk, layers))
            logits = logits.float()  # [c, V]
            firsts[:, chunk.cpu()] = torch.log_softmax(logits, -1)[:, tokens].T.cpu()
            first_priors[:, chunk.cpu()] = slot_log_prior(logits, allowed)[:, tokens].T.cpu()
    for index, token in enumerate(first_tokens):
        second, second_prior = torch.zeros(n, vocabulary), torch.zeros(n, vocabulary)
        for chunk, layers in heads:
            logits = discriminator.continued_logits(layers, token).float()
            second[chunk.cpu()] = torch.log_softmax(logits, -1).cpu()
            second_prior[chunk.cpu()] = slot_log_prior(logits, allowed).cpu()
        yield token, firsts[index], first_priors[index], second, second_prior


def beam_scan(discriminator: Discriminator, scorer: HardLabelScorer, first_tokens: list[int], keep: int = 16) -> ScanResult:
    """The two-token label of lowest objective among those whose first token is one of `first_tokens`, every allowed
    second token scored exactly (`discriminator` and `scorer` built for two-token labels)."""
    start = time.perf_counter()
    allowed = scorer.allowed.nonzero().flatten()
    ranking: list[tuple[tuple[int, ...], float]] = []
    for first, first_log_q, first_prior, log_q, prior in two_token_tables(discriminator, scorer, first_tokens):
        objective = table_objectives(log_q, prior, scorer.targets, allowed, scorer.kl_weight, base=first_log_q,
                                     base_surprisal=-first_prior)
        ranking += _best(objective, [(first, int(t)) for t in allowed.tolist()], keep)
    ranking.sort(key=lambda pair: pair[1])
    return ScanResult(ranking[0][0], ranking[0][1], ranking[:keep], len(first_tokens) * len(allowed), time.perf_counter() - start)
