"""FTGD objectives: the one-pass batch loss has exactly the gradient of the two-pass differential."""

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from gradspace.errors import GradspaceError
from gradspace.evaluation.logprobs import encode_with_prefix, pad_sequences, pad_token_id, token_logprobs
from gradspace.ftgd.objectives import OBJECTIVES, collate_pairs, differing_token_masks, objective_loss
from gradspace.pairs import MinimalPair
from gradspace.synth.tokenizer import build_word_tokenizer

pytestmark = pytest.mark.unit

WORDS = "the a dog dogs cat cats runs run sees see near big small himself themselves".split()
PAIRS = [
    MinimalPair("the dog runs", "the dog run", "sva", "agreement", "0"),
    MinimalPair("the big cats near the dog see a cat", "the big cats near the dog sees a cat", "sva", "agreement", "1"),
    MinimalPair("a cat sees himself", "a cat sees themselves", "anaphor", "anaphor", "2"),
]


@pytest.fixture(scope="module")
def tokenizer():
    return build_word_tokenizer(WORDS)


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    config = GPTNeoXConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                           vocab_size=len(tokenizer), max_position_embeddings=32)
    return GPTNeoXForCausalLM(config).double().eval()


def gradient(model, loss) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def two_pass_logprob(model, tokenizer, sentences, score_masks=None) -> torch.Tensor:
    batch = pad_sequences(encode_with_prefix(tokenizer, sentences), pad_token_id(tokenizer), score_masks)
    return token_logprobs(model, batch).sum(dim=-1)


def test_diff_gradient_equals_difference_of_two_separate_passes(model, tokenizer):
    one_pass = gradient(model, objective_loss(model, collate_pairs(tokenizer, PAIRS, "diff"), "diff")[0])
    nll_good = -two_pass_logprob(model, tokenizer, [p.good for p in PAIRS]).mean()
    grad_good = gradient(model, nll_good)
    nll_bad = -two_pass_logprob(model, tokenizer, [p.bad for p in PAIRS]).mean()
    grad_bad = gradient(model, nll_bad)
    assert one_pass.abs().max() > 1e-3
    torch.testing.assert_close(one_pass, grad_good - grad_bad, atol=1e-5, rtol=0)


def test_bounded_is_softplus_of_negative_margin_and_scales_the_differential(model, tokenizer):
    batch = collate_pairs(tokenizer, PAIRS, "bounded")
    loss, stats = objective_loss(model, batch, "bounded")
    good = two_pass_logprob(model, tokenizer, [p.good for p in PAIRS])
    bad = two_pass_logprob(model, tokenizer, [p.bad for p in PAIRS])
    margin = (good - bad).detach()
    torch.testing.assert_close(loss.detach(), torch.nn.functional.softplus(-margin).mean())
    torch.testing.assert_close(stats["margin"], margin.mean())
    torch.testing.assert_close(stats["accuracy"], (margin > 0).to(stats["accuracy"].dtype).mean())
    # d softplus(-m) = sigmoid(-m) * d(-m): each pair's differential weighted by sigmoid(-margin).
    weights = torch.sigmoid(-margin)
    expected = gradient(model, -(weights * (good - bad)).mean())
    torch.testing.assert_close(gradient(model, objective_loss(model, batch, "bounded")[0]), expected, atol=1e-6, rtol=0)


def test_good_and_bad_share_one_padded_batch(tokenizer):
    batch = collate_pairs(tokenizer, PAIRS, "diff")
    assert batch.n_pairs == 3 and batch.batch.input_ids.shape[0] == 6
    lm = collate_pairs(tokenizer, PAIRS, "lm")
    assert lm.batch.input_ids.shape[0] == 3
    assert lm.batch.score_mask.sum() == sum(len(p.good.split()) for p in PAIRS)


def test_diff_tokens_scores_only_the_differing_tokens(tokenizer):
    batch = collate_pairs(tokenizer, PAIRS, "diff_tokens")
    ids, mask = batch.batch.input_ids, batch.batch.score_mask

    def scored(row):
        return tokenizer.convert_ids_to_tokens(ids[row][mask[row].bool()].tolist())

    assert scored(0) == ["runs"] and scored(3) == ["run"]
    assert scored(1) == ["see"] and scored(4) == ["sees"]
    assert scored(2) == ["himself"] and scored(5) == ["themselves"]


def test_diff_tokens_marks_the_token_after_a_one_sided_span():
    good, bad = differing_token_masks([0, 5, 6, 7], [0, 5, 9, 6, 7])  # bad has an extra token before 6
    assert good == [0, 0, 1, 0] and bad == [0, 0, 1, 0, 0]
    good, bad = differing_token_masks([0, 5, 6], [0, 5, 6, 8])  # extra token at the end: nothing follows the gap
    assert good == [0, 0, 0] and bad == [0, 0, 0, 1]


def test_diff_tokens_gradient_ignores_the_shared_context(model, tokenizer):
    batch = collate_pairs(tokenizer, PAIRS, "diff_tokens")
    loss, stats = objective_loss(model, batch, "diff_tokens")
    good = batch.batch.input_ids[: batch.n_pairs]
    masks = batch.batch.score_mask
    full = objective_loss(model, collate_pairs(tokenizer, PAIRS, "diff"), "diff")[1]["margin"]
    assert not torch.isclose(stats["margin"], full)
    assert masks.sum() == 6 and good.shape[0] == 3
    torch.testing.assert_close(loss.detach(), -stats["margin"])


def test_lm_is_token_mean_nll_of_good_sentences(model, tokenizer):
    loss, stats = objective_loss(model, collate_pairs(tokenizer, PAIRS, "lm"), "lm")
    good = two_pass_logprob(model, tokenizer, [p.good for p in PAIRS])
    tokens = sum(len(p.good.split()) for p in PAIRS)
    torch.testing.assert_close(loss.detach(), -good.sum().detach() / tokens)
    assert set(stats) == {"lm_loss"}


def test_unknown_objective_is_a_user_error(tokenizer):
    assert OBJECTIVES == ("bounded", "diff", "diff_tokens", "lm")
    with pytest.raises(GradspaceError, match="use one of bounded, diff, diff_tokens, lm"):
        collate_pairs(tokenizer, PAIRS, "contrastive")
