"""The discrete step: score candidate labels as hard tokens (embedding rows, exactly what the model sees for real
text) on the validation examples and keep the most accurate (AUROC, then balanced accuracy, then the training
objective); and the held-out evaluation of a hard label. At most `max_candidates` labels are scored per feature,
all of them from the soft labels (their top tokens and the argmax labels they visited) and from the objective's
gradient at the best ones (swaps): no list of words is enumerated.

A word list's validation split holds few positive words, so two candidates' AUROCs there differ by noise as often
as by merit; and the swaps are ranked by the gradient on those same validation examples, so their validation
scores are biased upwards. The point ranking decides only where its lead holds up: the candidates that score at
least the best's AUROC in a set share of paired bootstrap resamples of the validation examples tie with it, and
among them the soft labels' own candidates come first, the lowest training objective of them winning (Breiman's
one-standard-error rule, with the optimiser's candidates in place of the simplest model). That objective is
measured on the training and the validation words together: on the validation words alone it is as noisy as their
AUROC (a list may hold 4 validation positives), and on the training words it is what the soft labels minimised.

Single-token labels: the union of every restart's top candidates (and of the argmax labels visited most often
during training) is scored. Multi-token labels: from each restart's argmax sequence, coordinate ascent replaces one position at a
time with that position's top candidates.

The LM's own prediction at the label slot proposes candidates too: the words it expects there for the active
examples rather than for the inactive ones ("is a forest a ..." → "place"), which no optimisation has to find.

Then a gradient-guided swap search (HotFlip, Ebrahimi et al. 2018; GCG, Zou et al. 2023) walks on from the best
labels found: the gradient of the objective with respect to the label's embeddings ranks every token of the
vocabulary by the first-order change a swap would make, and the best-ranked swaps are scored exactly. It reaches
words no restart's soft label came near, and costs one backward pass per label it starts from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torchmetrics.functional.classification import binary_auroc

from gradspace.labeling.config import DiscreteConfig
from gradspace.labeling.discriminator import Discriminator
from gradspace.labeling.objective import (
    balanced_mean,
    hard_label_naturalness,
    midpoint_calibration,
    readout_loss,
    slot_log_prior,
)
from gradspace.labeling.prompts import Example


@dataclass
class LabelScore:
    label_ids: tuple[int, ...]
    balanced_accuracy: float  # at `threshold`
    auroc: float
    loss: float  # balanced cross-entropy of the calibrated readout
    naturalness: float = 0.0  # balanced mean of -log q(label) under the LM's own prediction at the label slots
    objective: float = 0.0  # the training objective at this hard label: loss + kl_weight * naturalness
    threshold: float = 0.0  # the readout's decision boundary for this label (the per-label calibration)
    # the readout per example, in the scorer's order (positives first): what the bootstrap of the selection resamples
    example_scores: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def ranking_key(self) -> tuple[float, float, float]:
        """Larger is better: the higher AUROC, then the higher accuracy, then the lower objective."""
        return (self.auroc, self.balanced_accuracy, -self.objective)


# The stages of the discrete step, in order; the first two are the soft label's own result, and coordinate ascent
# only recombines the soft labels' top tokens (the LM prior and the swaps bring words of their own).
SOFT_LABEL_STAGES = ("soft_label_visited", "soft_label_top")
SOFT_LABEL_DERIVED = (*SOFT_LABEL_STAGES, "coordinate_ascent")
STAGES = (*SOFT_LABEL_STAGES, "coordinate_ascent", "lm_prior", "gradient_swap")


@dataclass
class DiscreteResult:
    best: LabelScore
    scored: list[LabelScore] = field(default_factory=list)
    # label -> the first stage that scored it: one of STAGES
    found_by: dict[tuple[int, ...], str] = field(default_factory=dict)
    # the labels within the validation split's noise of the top-ranked one (it among them), in `tie_break` order: best first
    tied: list[tuple[int, ...]] = field(default_factory=list)
    # each tied label's objective and AUROC as the tie-break measured them
    tie_objectives: dict[tuple[int, ...], float] = field(default_factory=dict)
    tie_aurocs: dict[tuple[int, ...], float] = field(default_factory=dict)

    def scores_of(self, label: tuple[int, ...]) -> LabelScore | None:
        """The label's validation score if the discrete step scored it."""
        return next((score for score in self.scored if score.label_ids == label), None)


def classification_metrics(scores: torch.Tensor, targets: torch.Tensor, threshold: float | None = None
                           ) -> tuple[float, float, float, float]:
    """(balanced accuracy at the threshold, AUROC, balanced cross-entropy of the calibrated scores, threshold)."""
    calibrated, threshold = midpoint_calibration(scores, targets, threshold)
    predictions = calibrated > 0
    positive, negative = targets.bool(), ~targets.bool()
    tpr = (predictions & positive).sum() / positive.sum().clamp(min=1)
    tnr = (~predictions & negative).sum() / negative.sum().clamp(min=1)
    loss = readout_loss(calibrated, targets)
    auroc = binary_auroc(scores, targets.long())
    return float((tpr + tnr) / 2), float(auroc), float(loss), threshold


class HardLabelScorer:
    """Scores hard labels on a fixed set of examples, many labels per forward, by the objective the soft label trains
    on (gradspace.labeling.objective), calibrated at the classes' midpoint where training learns its calibration: at
    a one-hot p the entropy is 0 and KL(p || q) is -log q(label)."""

    def __init__(self, discriminator: Discriminator, positives: Sequence[Example], negatives: Sequence[Example],
                 pad_id: int, allowed: torch.Tensor, kl_weight: float = 0.0, max_floats: int = 2**27):
        self.discriminator = discriminator
        examples = list(positives) + list(negatives)
        self.prompts = discriminator.builder.batch(examples, pad_id)
        self.targets = torch.tensor([1] * len(positives) + [0] * len(negatives))
        self.allowed = allowed
        self.kl_weight = kl_weight
        # Items per forward: full-vocabulary logits (likelihood readouts, the naturalness prior) fill max_floats.
        vocabulary, length = discriminator.embedding.shape[0], discriminator.builder.label_length
        full_logits = kl_weight > 0 or discriminator.builder.readout != "answer"
        self.max_batch = max(1, max_floats // (vocabulary * (length + 2))) if full_logits else 2048
        # Labels per forward: their items fill max_batch, or, where one forward per label scores every example, they do.
        self.labels_per_forward = self.max_batch if discriminator.word_follows_one_stem(self.prompts) else max(1, self.max_batch // len(examples))
        self.takes_an = discriminator.builder.takes_an(discriminator.embedding.shape[0])
        self._label_free: tuple[torch.Tensor, torch.Tensor] | None = None

    def label_free_log_q(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """For a prompt that never sees its label (`Discriminator.label_is_only_predicted`): log q over the whole
        vocabulary and over the allowed tokens [n_examples, V], computed once for all the labels scored here."""
        if not self.discriminator.label_is_only_predicted(self.prompts):
            return None
        if self._label_free is None:
            device = self.discriminator.embedding.device
            logits = self.discriminator.label_free_slot_logits(self.prompts.to(device)).float()
            self._label_free = (torch.log_softmax(logits, dim=-1), slot_log_prior(logits, self.allowed.to(device)))
        return self._label_free

    @torch.no_grad()
    def per_example_outputs(self, labels: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Readout scores [n_labels, n_examples] and -log q(label) [n_labels, n_examples]."""
        device = self.discriminator.embedding.device
        label_free = self.label_free_log_q()
        if label_free is not None:
            tokens = torch.tensor([label[0] for label in labels], dtype=torch.long, device=device)
            log_q, prior = label_free
            surprisal = -prior[:, tokens].T if self.kl_weight > 0 else torch.zeros(len(labels), log_q.shape[0], device=device)
            return log_q[:, tokens].T.cpu(), surprisal.cpu()
        prompts = self.prompts.to(device)
        allowed = self.allowed.to(device)
        n = prompts.input_ids.shape[0]
        per_chunk = self.labels_per_forward
        label_tensor = torch.tensor([list(label) for label in labels], dtype=torch.long, device=device)
        score_rows, surprisal_rows = [], []
        for start in range(0, len(label_tensor), per_chunk):
            chunk = label_tensor[start : start + per_chunk]
            c = len(chunk)
            rows = torch.arange(c, device=device).repeat_interleave(n)
            examples = torch.arange(n, device=device).repeat(c)
            an_weights = self.takes_an.to(device)[chunk[:, 0]].float()
            out = self.discriminator(prompts, self.discriminator.embedding[chunk], rows, with_slot_logits=self.kl_weight > 0,
                                     an_weights=an_weights, examples=examples, label_tokens=chunk)
            score_rows.append(out.scores.view(c, n).float().cpu())
            if out.slot_logits is None:
                surprisal_rows.append(torch.zeros(c, n))
                continue
            # log q of each item's label tokens, read from the distinct slot rows (one per label where they are shared)
            log_q = slot_log_prior(out.slot_logits, allowed)
            slot_rows = torch.arange(len(rows), device=device) if out.slot_rows is None else out.slot_rows
            picked = log_q[slot_rows[:, None], torch.arange(log_q.shape[1], device=device), chunk[rows]]  # [c*n, L]
            surprisal_rows.append(-picked.sum(-1).view(c, n).cpu())
        return torch.cat(score_rows), torch.cat(surprisal_rows)

    def score_labels(self, labels: Sequence[Sequence[int]], thresholds: Sequence[float] | None = None) -> list[LabelScore]:
        """Each label's metrics and objective over all examples; accuracy at the given `thresholds` (held-out
        examples: the ones the validation examples calibrated) or at each label's own midpoint."""
        all_scores, surprisal = self.per_example_outputs(labels)
        results = []
        for index, (label, s, nll) in enumerate(zip(labels, all_scores, surprisal)):
            accuracy, auroc, loss, threshold = classification_metrics(s, self.targets, None if thresholds is None else thresholds[index])
            naturalness = float(hard_label_naturalness(nll, self.targets))
            results.append(LabelScore(tuple(int(t) for t in label), accuracy, auroc, loss, naturalness,
                                      loss + self.kl_weight * naturalness, threshold, s))
        return results

    @torch.no_grad()
    def prior_candidates(self, top: int) -> list[int]:
        """First-token candidates from the LM's own next-token distribution q at the label slot: the `top` tokens
        most probable on the active examples, and the `top` most probable there relative to the inactive ones
        (mean log q over active minus over inactive examples). Each token is read under its own article."""
        device = self.discriminator.embedding.device
        prompts = self.prompts.to(device)
        targets = self.targets.to(device).bool()
        allowed = self.allowed.to(device)
        rows = torch.zeros(prompts.input_ids.shape[0], dtype=torch.long, device=device)
        placeholder = self.discriminator.embedding[torch.zeros(1, prompts.label_positions.shape[1], dtype=torch.long, device=device)]
        def first_slot_log_q(an: float | None) -> torch.Tensor:
            an_weights = None if an is None else torch.full((1,), an, device=device)
            out = self.discriminator(prompts, placeholder, rows, with_slot_logits=True, an_weights=an_weights,
                                     label_tokens=torch.zeros(placeholder.shape[:2], dtype=torch.long, device=device))
            return slot_log_prior(out.item_slot_logits()[:, 0], allowed)

        # The first slot's prediction does not depend on the label, except through its article ("a" or "an").
        if prompts.label_article_positions is None:
            log_q = first_slot_log_q(None)
        else:
            log_q = torch.where(self.takes_an.to(device), first_slot_log_q(1.0), first_slot_log_q(0.0))
        active, inactive = log_q[targets].mean(0), log_q[~targets].mean(0)
        k = min(top, int(allowed.sum()))
        picks = active.masked_fill(~allowed, float("-inf")).topk(k).indices.tolist()
        picks += (active - inactive).masked_fill(~allowed, float("-inf")).topk(k).indices.tolist()
        return list(dict.fromkeys(int(t) for t in picks))

    def swap_candidates(self, label: Sequence[int], top: int) -> list[tuple[int, ...]]:
        """The `top` single-token swaps per position of `label` that the objective's linearisation at the label
        ranks best: the gradient of the readout loss with respect to the label as one-hot rows (through its
        embeddings, (E_t − E_label)·∇, and for the label_likelihood readout through the label itself), plus the
        exact −log q(t) for the naturalness term."""
        device = self.discriminator.embedding.device
        prompts = self.prompts.to(device)
        targets = self.targets.to(device)
        embedding = self.discriminator.embedding.detach()
        label_ids = torch.tensor([list(label)], dtype=torch.long, device=device)
        rows = torch.zeros(prompts.input_ids.shape[0], dtype=torch.long, device=device)
        one_hot = torch.nn.functional.one_hot(label_ids, embedding.shape[0]).float().requires_grad_(True)
        allowed = self.allowed.to(device)
        label_free = self.label_free_log_q()
        with torch.enable_grad():
            if label_free is not None:  # the readout is linear in the one-hot: log q · onehot
                scores, log_q = label_free[0] @ one_hot[0, 0], label_free[1][:, None] if self.kl_weight > 0 else None
            else:
                out = self.discriminator(prompts, one_hot @ embedding.float(), rows, with_slot_logits=self.kl_weight > 0,
                                         an_weights=self.takes_an.to(device)[label_ids[:, 0]].float(), label_probs=one_hot)
                scores = out.scores
                log_q = None if out.slot_logits is None else slot_log_prior(out.item_slot_logits(), allowed)
            loss = readout_loss(midpoint_calibration(scores, targets)[0], targets)
            (gradient,) = torch.autograd.grad(loss, one_hot)
        # The current token's term is the same constant for every token of a position, so it drops out.
        change = gradient[0]  # [L, V]
        if log_q is not None:
            change = change - self.kl_weight * balanced_mean(log_q.masked_fill(~allowed, 0.0), targets)
        change = change.masked_fill(~allowed, float("inf"))
        change[torch.arange(len(label), device=device), label_ids[0]] = float("inf")
        picks = change.topk(min(top, int(allowed.sum()) - 1), dim=-1, largest=False).indices.tolist()
        label = tuple(int(t) for t in label)
        return [label[:position] + (int(t),) + label[position + 1 :] for position, tokens in enumerate(picks) for t in tokens]


def select_label(scorer: HardLabelScorer, p: torch.Tensor, config: DiscreteConfig,
                 visited: Sequence[tuple[int, ...]] = (), tie_scorer: HardLabelScorer | None = None) -> DiscreteResult:
    """Best hard label among the `config.top` candidates of the soft labels `p` [R, L, V] (one feature's restarts),
    the `config.top` labels the soft labels' argmax `visited` most often during training (most visited first), the LM prior's `config.prior_top` candidates for
    the first token (the rest of the best label so far after it), and up to `config.swap_rounds` rounds of
    gradient-guided swaps from the `config.swap_beam` best labels so far (each round starts only from labels not
    yet expanded); `config.max_candidates` labels at most, in that order. Of the labels tied with the top-ranked one
    within the validation examples' noise (`ties_with_first` at `config.tie_share`), `config.tie_break` picks: the
    soft labels' own candidates first and then the lowest objective (soft_label), or the lowest objective alone
    (objective), taken by `tie_scorer` (the training and validation words) where given, else on the validation
    examples."""
    candidates_per_position = p.topk(min(config.top, p.shape[-1]), dim=-1).indices  # [R, L, top]
    scored: dict[tuple[int, ...], LabelScore] = {}
    found_by: dict[tuple[int, ...], str] = {}

    def evaluate(labels: list[tuple[int, ...]], source: str) -> None:
        new = [label for label in dict.fromkeys(labels) if label not in scored][: config.max_candidates - len(scored)]
        for result in scorer.score_labels(new) if new else []:
            scored[result.label_ids] = result
            found_by[result.label_ids] = source

    if p.shape[1] == 1:
        evaluate([(int(t),) for t in candidates_per_position[:, 0].flatten().tolist()], "soft_label_top")
    else:
        for restart in range(p.shape[0]):
            current = tuple(int(t) for t in p[restart].argmax(-1).tolist())
            evaluate([current], "soft_label_top")
            for _ in range(config.sweeps):
                for position in range(p.shape[1]):
                    options = [current[:position] + (int(t),) + current[position + 1 :] for t in candidates_per_position[restart, position].tolist()]
                    evaluate(options, "coordinate_ascent")
                    current = max((scored[o] for o in options + [current] if o in scored), key=LabelScore.ranking_key).label_ids
    evaluate([tuple(label) for label in visited][: config.top], "soft_label_visited")
    if config.prior_top > 0:
        tail = max(scored.values(), key=LabelScore.ranking_key).label_ids[1:]
        evaluate([(token, *tail) for token in scorer.prior_candidates(config.prior_top)], "lm_prior")
    expanded: set[tuple[int, ...]] = set()
    for _ in range(config.swap_rounds):
        beam = [s.label_ids for s in sorted(scored.values(), key=LabelScore.ranking_key, reverse=True)[:config.swap_beam]]
        starts = [label for label in beam if label not in expanded]
        if not starts:
            break  # the beam is made of labels whose swaps were all scored: a local optimum
        for label in starts:
            expanded.add(label)
            evaluate(scorer.swap_candidates(label, config.swap_top), "gradient_swap")
    ranked = sorted(scored.values(), key=LabelScore.ranking_key, reverse=True)
    if config.tie_share >= 1.0:  # the strict ranking
        return DiscreteResult(best=ranked[0], scored=ranked, found_by=found_by, tied=[ranked[0].label_ids])
    scores = torch.stack([score.example_scores for score in ranked])
    tied_mask = ties_with_first(scores, scorer.targets, config.tie_share, config.resamples)
    tied = [score.label_ids for score, is_tied in zip(ranked, tied_mask.tolist()) if is_tied]
    measured = scored if tie_scorer is None or len(tied) == 1 else {s.label_ids: s for s in tie_scorer.score_labels(tied)}
    objectives = {label: measured[label].objective for label in tied}
    aurocs = {label: measured[label].auroc for label in tied}
    if config.tie_break == "soft_label":  # the soft labels' own candidates before those the validation gradient found
        tied.sort(key=lambda label: (found_by[label] not in SOFT_LABEL_DERIVED, objectives[label]))
    else:
        tied.sort(key=objectives.get)
    return DiscreteResult(best=scored[tied[0]], scored=ranked, found_by=found_by, tied=tied, tie_objectives=objectives,
                          tie_aurocs=aurocs)


def ties_with_first(scores: torch.Tensor, targets: torch.Tensor, share: float, resamples: int, seed: int = 0) -> torch.Tensor:
    """[n_labels] bool: the labels whose AUROC is at least the first label's in `share` or more of `resamples` paired
    bootstrap resamples of the examples (each class drawn with replacement from its own examples). `scores` is
    [n_labels, n_examples], `targets` [n_examples]; the first label always ties with itself."""
    positive, negative = scores[:, targets.bool()].double(), scores[:, ~targets.bool()].double()
    # wins[l, i, j]: label l ranks positive i above negative j (a tie counts half), so a resample's AUROC is
    # counts_pos · wins · counts_neg over the number of pairs, for all labels and resamples in two products.
    wins = (positive[:, :, None] > negative[:, None, :]).double() + 0.5 * (positive[:, :, None] == negative[:, None, :]).double()
    generator = torch.Generator().manual_seed(seed)
    n_pos, n_neg = positive.shape[1], negative.shape[1]
    draw = lambda n: torch.zeros(resamples, n, dtype=torch.float64).scatter_add_(  # noqa: E731
        1, torch.randint(n, (resamples, n), generator=generator), torch.ones(resamples, n, dtype=torch.float64))
    counts_pos, counts_neg = draw(n_pos), draw(n_neg)
    auroc = torch.einsum("bi,lij,bj->bl", counts_pos, wins, counts_neg) / (n_pos * n_neg)  # [resamples, n_labels]
    at_least_first = (auroc >= auroc[:, :1] - 1e-12).double().mean(0)
    return at_least_first >= share - 1e-12
