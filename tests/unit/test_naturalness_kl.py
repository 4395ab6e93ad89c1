"""The naturalness term KL(p ‖ q) of the soft label's loss, summed per row before the vocabulary-sized product:
equal, in value and gradient, to the plain mean over items of KL(p_row ‖ q_item) (no model: random logits)."""

import pytest
import torch

from gradspace.labeling.discriminator import DiscriminatorOutput, slot_log_prior
from gradspace.labeling.soft_label import naturalness_kl

pytestmark = pytest.mark.unit


def per_item_kl(p, log_p, item_slot_logits, rows, allowed):
    log_q = slot_log_prior(item_slot_logits, allowed).masked_fill(~allowed, 0.0)
    return (p[rows] * (log_p[rows] - log_q)).sum(-1).mean()


@pytest.mark.parametrize("per_prompt", [True, False])
def test_naturalness_kl_equals_the_mean_over_items(per_prompt):
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
