"""The labeling objective (gradspace.labeling.objective) on toy numbers, no model: the balanced cross-entropy, the
two calibrations, the naturalness of soft and hard labels, and the scan's vectorised form of selection's objective."""

import math

import pytest
import torch

from gradspace.labeling.discriminator import DiscriminatorOutput
from gradspace.labeling.objective import (
    balanced_bce,
    balanced_mean,
    column_objectives,
    hard_label_naturalness,
    learned_calibration,
    midpoint_calibration,
    naturalness_kl,
    readout_loss,
    slot_log_prior,
)

pytestmark = pytest.mark.unit


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_balanced_bce_weighs_classes_equally():
    scores = torch.tensor([2.0, 2.0, 2.0, -1.0, 0.5, 0.0])
    targets = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 1.0])
    groups = torch.tensor([0, 0, 0, 0, 1, 1])
    losses = torch.nn.functional.binary_cross_entropy_with_logits(scores, targets, reduction="none")
    group0 = 0.5 * (losses[:3].mean() + losses[3])
    group1 = 0.5 * (losses[4] + losses[5])
    assert torch.isclose(balanced_bce(scores, targets, groups, 2), (group0 + group1) / 2)


def test_readout_loss_is_the_hand_computed_balanced_cross_entropy():
    # Three positives at scores 1, 1, -1 and one negative at 0: -log σ(s) per positive, -log(1 - σ(s)) per negative.
    scores = torch.tensor([1.0, 1.0, -1.0, 0.0])
    targets = torch.tensor([1, 1, 1, 0])
    positive_mean = (2 * softplus(-1.0) + softplus(1.0)) / 3
    assert float(readout_loss(scores, targets)) == pytest.approx(0.5 * (positive_mean + math.log(2)), rel=1e-6)


def test_balanced_mean_weighs_classes_equally():
    values = torch.tensor([1.0, 1.0, 1.0, 5.0])
    assert float(balanced_mean(values, torch.tensor([1, 1, 1, 0]))) == pytest.approx(3.0)


def test_midpoint_calibration_centres_on_the_classes_midpoint_and_divides_by_the_spread():
    scores = torch.tensor([4.0, 2.0, 0.0, -2.0, -4.0])
    targets = torch.tensor([1, 1, 0, 0, 0])
    calibrated, threshold = midpoint_calibration(scores, targets)
    assert threshold == pytest.approx(0.5)  # the midpoint of the classes' means 3 and -2, not the mean of all scores
    assert torch.allclose(calibrated, (scores - 0.5) / scores.std())
    # Held-out examples reuse a threshold fitted elsewhere.
    assert midpoint_calibration(scores, targets, threshold=2.0)[1] == 2.0
    # Shifting every score leaves the calibrated readout as it was.
    assert torch.allclose(midpoint_calibration(scores + 10, targets)[0], calibrated)


def test_learned_calibration_centres_each_row_on_its_batch_mean_then_applies_its_scale_and_offset():
    scores = torch.tensor([3.0, 1.0, 10.0, 20.0])
    rows = torch.tensor([0, 0, 1, 1])
    calibration = torch.tensor([[0.0, 0.0], [math.log(2.0), -1.0]])  # row 0: identity; row 1: scale 2, offset -1
    calibrated = learned_calibration(scores, rows, calibration)
    assert torch.allclose(calibrated, torch.tensor([1.0, -1.0, -11.0, 9.0]))


def test_the_naturalness_of_p_equal_to_the_lm_prediction_is_zero():
    logits = torch.tensor([[[2.0, 0.5, -1.0, 0.0]]])  # one prompt, one label position, four tokens
    allowed = torch.tensor([True, True, True, False])
    p = slot_log_prior(logits, allowed).exp()  # q over the allowed tokens
    out = DiscriminatorOutput(scores=torch.zeros(1), slot_logits=logits)
    value = naturalness_kl(p, torch.log(p.clamp_min(1e-12)), out, torch.tensor([0]), allowed)
    assert float(value) == pytest.approx(0.0, abs=1e-6)
    # A one-hot p is -log q(label) away: what selection's hard_label_naturalness averages.
    one_hot = torch.tensor([[[0.0, 1.0, 0.0, 0.0]]])
    hard = naturalness_kl(one_hot, torch.log(one_hot.clamp_min(1e-12)), out, torch.tensor([0]), allowed)
    assert float(hard) == pytest.approx(-float(slot_log_prior(logits, allowed)[0, 0, 1]), rel=1e-5)


def test_hard_label_naturalness_is_the_balanced_mean_surprisal():
    surprisal = torch.tensor([1.0, 3.0, 10.0])
    assert float(hard_label_naturalness(surprisal, torch.tensor([1, 1, 0]))) == pytest.approx(0.5 * (2.0 + 10.0))


def test_column_objectives_is_selection_objective_per_column_and_weights_repeat_rows():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(7, 3, generator=generator, dtype=torch.float64)
    surprisal = torch.rand(7, 3, generator=generator, dtype=torch.float64) * 5
    targets = torch.tensor([1, 1, 1, 0, 0, 0, 0])
    kl_weight = 0.3
    per_label = [float(readout_loss(midpoint_calibration(scores[:, c], targets)[0], targets))
                 + kl_weight * float(hard_label_naturalness(surprisal[:, c], targets)) for c in range(3)]
    # readout_loss takes float32 targets, so its loss is float32
    assert column_objectives(scores, surprisal, targets, kl_weight).tolist() == pytest.approx(per_label, rel=1e-6)
    weights = torch.tensor([1, 2, 1, 3, 1, 1, 2])
    repeated = torch.arange(7).repeat_interleave(weights)  # each row as many times as its weight
    assert column_objectives(scores, surprisal, targets, kl_weight, weights).tolist() == pytest.approx(
        column_objectives(scores[repeated], surprisal[repeated], targets[repeated], kl_weight).tolist(), rel=1e-9)


def per_item_kl(p, log_p, item_slot_logits, rows, allowed):
    log_q = slot_log_prior(item_slot_logits, allowed).masked_fill(~allowed, 0.0)
    return (p[rows] * (log_p[rows] - log_q)).sum(-1).mean()


@pytest.mark.parametrize("per_prompt", [True, False])
def test_naturalness_kl_equals_the_mean_over_items(per_prompt):
    """Summed per row before the vocabulary-sized product: equal, in value and gradient, to the plain mean over items
    of KL(p_row ‖ q_item)."""
    generator = torch.Generator().manual_seed(0)
    n_rows, length, vocabulary, n_prompts = 6, 2, 50, 5
    allowed = torch.rand(vocabulary, generator=generator) > 0.3
    v = torch.randn(n_rows, length, vocabulary, generator=generator, requires_grad=True)
    rows = torch.tensor([0, 1, 2, 3, 4, 5, 0, 0, 3, 5, 5])  # rows with different numbers of items
    examples = torch.tensor([0, 1, 2, 3, 4, 0, 1, 1, 2, 3, 4])
    prompt_logits = torch.randn(n_prompts, length, vocabulary, generator=generator)
    out = (DiscriminatorOutput(scores=torch.zeros(len(rows)), slot_logits=prompt_logits, slot_rows=examples) if per_prompt
           else DiscriminatorOutput(scores=torch.zeros(len(rows)), slot_logits=prompt_logits[examples]))

    def both(fn):
        p = torch.softmax(v.masked_fill(~allowed, float("-inf")), dim=-1)
        log_p = torch.log(p.clamp_min(1e-12))
        value = fn(p, log_p)
        (gradient,) = torch.autograd.grad(value, v)
        return value, gradient

    value, gradient = both(lambda p, log_p: naturalness_kl(p, log_p, out, rows, allowed))
    expected, expected_gradient = both(lambda p, log_p: per_item_kl(p, log_p, prompt_logits[examples], rows, allowed))
    assert value.item() > 0
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    assert torch.allclose(gradient, expected_gradient, atol=1e-6) and gradient.abs().sum() > 0
