"""The exact scan: every allowed token scored as the label by the objective the soft label trains on (the calibrated
readout's balanced cross-entropy + `kl_weight` × naturalness), its minimum taken.

Where a one-token label is only predicted (`Discriminator.label_is_only_predicted`: the label_likelihood readout),
the readout of label t on example n is log q(t | prompt n), a column of the [examples × vocabulary] table of the
prompts' label-free log q, so the objective of every token is a few vectorised reductions over that table: exact,
with no optimisation and no candidate limit. Any other readout is scanned by scoring each allowed token as a hard
label through the LM, one forward per (token, example): exact too, and affordable where the vocabulary is small
(the synthetic world's 652 words).

Two-token labels (`beam_scan`): q(t1 t2 | prompt) = q(t1 | prompt) q(t2 | prompt t1), so for each first token of a
beam (the one-token scan's best) one forward per example gives the second token's whole column of the table; the
best (t1, t2) of the beam is exact given its first token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gradspace.labeling.discrete import HardLabelScorer
from gradspace.labeling.discriminator import Discriminator, slot_log_prior

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


def column_objectives(scores: torch.Tensor, surprisal: torch.Tensor | None, targets: torch.Tensor, kl_weight: float) -> torch.Tensor:
    """[C] the objective of C labels from their readout `scores` [N, C] on N examples (and -log q(label) `surprisal`
    [N, C] for naturalness): per column exactly what `HardLabelScorer.score_labels` computes for one label
    (`discrete.calibrate` at the classes' midpoint, the balanced cross-entropy, the balanced mean surprisal)."""
    positive = targets.bool()
    scores = scores.double()
    threshold = 0.5 * (scores[positive].mean(0) + scores[~positive].mean(0))
    calibrated = (scores - threshold) / scores.std(0).clamp(min=1e-6)
    loss = 0.5 * (F.softplus(-calibrated[positive]).mean(0) + F.softplus(calibrated[~positive]).mean(0))
    if surprisal is None or kl_weight == 0:
        return loss
    surprisal = surprisal.double()
    naturalness = 0.5 * (surprisal[positive].mean(0) + surprisal[~positive].mean(0))
    return loss + kl_weight * naturalness


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


def vocabulary_scan(scorer: HardLabelScorer, keep: int = 16) -> ScanResult:
    """The one-token label of lowest objective on the scorer's examples, over every allowed token."""
    import time

    start = time.perf_counter()
    allowed = scorer.allowed.nonzero().flatten()
    labels = [(int(t),) for t in allowed.tolist()]
    label_free = scorer.label_free_log_q()
    if label_free is not None:
        log_q, prior = label_free
        objective = table_objectives(log_q, prior, scorer.targets, allowed, scorer.kl_weight)
    else:
        chunk = max(1, scorer.max_batch // max(1, len(scorer.targets)))
        objective = torch.cat([torch.tensor([s.objective for s in scorer.score_labels(labels[i : i + chunk])], dtype=torch.float64)
                               for i in range(0, len(labels), chunk)])
    ranking = _best(objective, labels, keep)
    return ScanResult(ranking[0][0], ranking[0][1], ranking, len(labels), time.perf_counter() - start)


@torch.no_grad()
def second_token_log_q(discriminator: Discriminator, scorer: HardLabelScorer, first: int, max_floats: int = 2**27
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For the first label token `first` on every example of a two-token `scorer`: its readout log q(first | prompt)
    [N], the second slot's log q(· | prompt first) [N, V] and allowed-token prior [N, V], and the first token's
    allowed-token prior [N]."""
    device = discriminator.embedding.device
    prompts = scorer.prompts.to(device)
    allowed = scorer.allowed.to(device)
    n = prompts.input_ids.shape[0]
    vocabulary = discriminator.embedding.shape[0]
    per_chunk = max(1, max_floats // (2 * vocabulary))
    firsts, seconds, priors, first_priors = [], [], [], []
    label = torch.tensor([[first, first]], dtype=torch.long, device=device)
    for start in range(0, n, per_chunk):
        examples = torch.arange(start, min(n, start + per_chunk), device=device)
        rows = torch.zeros(len(examples), dtype=torch.long, device=device)
        an_weights = scorer.takes_an.to(device)[label[:, 0]].float()
        out = discriminator(prompts, discriminator.embedding[label], rows, with_slot_logits=True, an_weights=an_weights,
                            examples=examples, label_tokens=label)
        logits = out.item_slot_logits().float()  # [n, 2, V]
        log_q = torch.log_softmax(logits, dim=-1)
        firsts.append(log_q[:, 0, first].cpu())
        first_priors.append(slot_log_prior(logits[:, 0], allowed)[:, first].cpu())
        seconds.append(log_q[:, 1].cpu())
        priors.append(slot_log_prior(logits[:, 1], allowed).cpu())
    return torch.cat(firsts), torch.cat(seconds), torch.cat(priors), torch.cat(first_priors)


def beam_scan(discriminator: Discriminator, scorer: HardLabelScorer, first_tokens: list[int], keep: int = 16) -> ScanResult:
    """The two-token label of lowest objective among those whose first token is one of `first_tokens`, every allowed
    second token scored exactly (`discriminator` and `scorer` built for two-token labels)."""
    import time

    start = time.perf_counter()
    allowed = scorer.allowed.nonzero().flatten()
    ranking: list[tuple[tuple[int, ...], float]] = []
    for first in first_tokens:
        first_log_q, log_q, prior, first_prior = second_token_log_q(discriminator, scorer, first)
        objective = table_objectives(log_q, prior, scorer.targets, allowed, scorer.kl_weight, base=first_log_q,
                                     base_surprisal=-first_prior)
        ranking += _best(objective, [(first, int(t)) for t in allowed.tolist()], keep)
    ranking.sort(key=lambda pair: pair[1])
    return ScanResult(ranking[0][0], ranking[0][1], ranking[:keep], len(first_tokens) * len(allowed), time.perf_counter() - start)
