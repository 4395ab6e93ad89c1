"""The labeling objective, one definition for the soft label's training (gradspace.labeling.soft_label) and the
selection of hard labels (gradspace.labeling.discrete, gradspace.labeling.scan):

    balanced cross-entropy of the calibrated readout against the feature's activity + kl_weight × naturalness,

both classes (active and inactive examples) weighing half whatever their sizes. Training and selection differ in
two places, and the names say how:

- The calibration. A readout's offset and scale mean nothing by themselves (a label can raise every score, as "Yes"
  to everything does). Training learns a log-scale and an offset per soft label beside it, on scores centred on
  their mean over the batch (`learned_calibration`). Selection scores hundreds of candidates once each, with
  nothing to learn: it puts the boundary at the midpoint of the two classes' mean readouts and divides by the
  readouts' spread (`midpoint_calibration`); held-out examples reuse the validation examples' midpoint.
- The naturalness. Training takes KL(p ‖ q) of the soft label p from q, the LM's own prediction at the label slot,
  averaged over the label's positions (`naturalness_kl`). At a hard label p is one-hot and the KL is -log q(label),
  which selection sums over the positions (`hard_label_naturalness`, `column_objectives`): the two agree for
  one-token labels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gradspace.labeling.discriminator import DiscriminatorOutput


def balanced_mean(values: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over examples (dim 0) in which both classes weigh half, whatever their sizes."""
    positive = targets.bool()
    return 0.5 * (values[positive].mean(0) + values[~positive].mean(0))


def balanced_bce(scores: torch.Tensor, targets: torch.Tensor, groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Per group, the mean of the positive-class and negative-class mean losses; averaged over groups."""
    return balanced_bce_per_group(scores, targets, groups, n_groups).mean()


def balanced_bce_per_group(scores: torch.Tensor, targets: torch.Tensor, groups: torch.Tensor, n_groups: int
                           ) -> torch.Tensor:
    """[n_groups]: per group, the mean of the positive-class and negative-class mean losses."""
    losses = F.binary_cross_entropy_with_logits(scores, targets, reduction="none")
    total = torch.zeros(n_groups, 2, device=scores.device, dtype=losses.dtype)
    count = torch.zeros(n_groups, 2, device=scores.device, dtype=losses.dtype)
    cls = targets.long()
    total.index_put_((groups, cls), losses, accumulate=True)
    count.index_put_((groups, cls), torch.ones_like(losses), accumulate=True)
    present = count > 0
    per_class = torch.where(present, total / count.clamp(min=1), torch.zeros_like(total))
    return per_class.sum(1) / present.sum(1).clamp(min=1)


def readout_loss(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The loss of one label's calibrated readout: `balanced_bce` with a single group."""
    return balanced_bce(scores, targets.float(), torch.zeros_like(targets, dtype=torch.long), 1)


def learned_calibration(scores: torch.Tensor, rows: torch.Tensor, calibration: torch.Tensor) -> torch.Tensor:
    """Training's calibration: each item's readout relative to its row's mean over the batch, times the row's learned
    scale, plus its learned offset; `calibration` [R, 2] holds each row's (log-scale, offset), trained with p."""
    n_rows = calibration.shape[0]
    total = torch.zeros(n_rows, device=scores.device, dtype=scores.dtype).index_add(0, rows, scores)
    count = torch.zeros(n_rows, device=scores.device, dtype=scores.dtype).index_add(0, rows, torch.ones_like(scores))
    centred = scores - (total / count.clamp(min=1))[rows]
    log_scale, offset = calibration[rows].unbind(-1)
    return centred * log_scale.exp() + offset


def midpoint_calibration(scores: torch.Tensor, targets: torch.Tensor, threshold: float | None = None
                         ) -> tuple[torch.Tensor, float]:
    """Selection's calibration of one label: (scores - threshold) / their spread, and the threshold, by default the
    midpoint of the two classes' means (the ranking is what counts, not where the label puts the scores)."""
    if threshold is None:
        threshold = float(balanced_mean(scores.detach(), targets))
    return (scores - threshold) / scores.std().clamp(min=1e-6), threshold


def slot_log_prior(slot_logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """log q over the tokens a label may use (-inf elsewhere), from the slot logits: the naturalness prior,
    never a training target, so detached."""
    return torch.log_softmax(slot_logits.detach().float().masked_fill(~allowed, float("-inf")), dim=-1)


def naturalness_kl(p: torch.Tensor, log_p: torch.Tensor, out: DiscriminatorOutput, rows: torch.Tensor,
                   allowed: torch.Tensor) -> torch.Tensor:
    """Training's naturalness: KL(p_row ‖ q_item) averaged over items and label positions: p [R, L, V] per row, q
    from the items' slot logits. Each row's log q is summed over its items first (a [R, M] count matrix times the M
    slot-logit rows), so nothing of size items × vocabulary is built where items share a prompt's slot logits
    (`slot_rows`): K features × R restarts reading the same prompts cost one vocabulary-sized row per prompt, not
    per item."""
    log_q = slot_log_prior(out.slot_logits, allowed).masked_fill(~allowed, 0.0)  # [M, L, V]
    n_items = rows.shape[0]
    slots = torch.arange(n_items, device=rows.device) if out.slot_rows is None else out.slot_rows
    counts = torch.zeros(p.shape[0], log_q.shape[0], device=p.device, dtype=log_q.dtype)
    counts.index_put_((rows, slots), torch.ones_like(rows, dtype=log_q.dtype), accumulate=True)  # [R, M]
    summed_log_q = (counts @ log_q.flatten(1)).view(p.shape)  # [R, L, V]: each row's log q summed over its items
    items_per_row = counts.sum(1)  # [R]
    negative_entropy = (items_per_row[:, None, None] * p * log_p).sum()  # Σ over items of Σ p log p
    return (negative_entropy - (p * summed_log_q).sum()) / (n_items * p.shape[1])


def hard_label_naturalness(surprisal: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Selection's naturalness of one hard label: the balanced mean over examples of its surprisal -log q(label)
    [n_examples] (summed over its positions), the KL(p ‖ q) of a one-hot p."""
    return balanced_mean(surprisal, targets)


def column_objectives(scores: torch.Tensor, surprisal: torch.Tensor | None, targets: torch.Tensor, kl_weight: float,
                      weights: torch.Tensor | None = None, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """[C] the objective of C hard labels from their readout `scores` [N, C] on N examples (and -log q(label)
    `surprisal` [N, C] for naturalness), vectorised over the labels: per column what `midpoint_calibration`,
    `readout_loss` and `hard_label_naturalness` give one label. `weights` [N] count each row as that many examples
    (rows of a word-alone readout stand for every occurrence of their word): the same result as the rows repeated.
    `dtype`: float32 halves the time of a whole SAE's scans."""
    positive = targets.bool().to(scores.device)
    scores = scores.to(dtype)
    w = torch.ones(len(targets), dtype=dtype, device=scores.device) if weights is None else weights.to(dtype=dtype, device=scores.device)
    w_pos, w_neg = w * positive, w * ~positive

    def class_mean(values: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
        return (class_weights @ values) / class_weights.sum()

    threshold = 0.5 * (class_mean(scores, w_pos) + class_mean(scores, w_neg))
    mean = (w @ scores) / w.sum()
    std = ((w @ (scores - mean) ** 2) / (w.sum() - 1)).sqrt()  # unbiased, as torch.std
    calibrated = (scores - threshold) / std.clamp(min=1e-6)
    loss = 0.5 * (class_mean(F.softplus(-calibrated), w_pos) + class_mean(F.softplus(calibrated), w_neg))
    if surprisal is None or kl_weight == 0:
        return loss
    surprisal = surprisal.to(dtype)
    return loss + kl_weight * 0.5 * (class_mean(surprisal, w_pos) + class_mean(surprisal, w_neg))
