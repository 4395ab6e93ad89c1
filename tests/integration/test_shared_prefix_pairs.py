"""Shared-prefix pair scoring equals scoring every sentence on its own, on the three architectures gradspace runs:
GPT-NeoX (the synthetic models), Llama (SmolLM2) and Gemma 3 (with a sliding window shorter than the sentences)."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import TINY_VOCABULARY, build_tiny_lm
from gradspace.evaluation.minimal_pairs import evaluate_pairs, score_pairs, shared_prefix_cache_argument
from gradspace.pairs import MinimalPair

pytestmark = pytest.mark.integration

TOLERANCE = 1e-4  # nats


def build_tiny(architecture: str, sliding_window: int = 3):
    """A random 2-layer model of `architecture` with the tiny word-level tokenizer; Gemma 3 with one sliding-window
    layer (window 3 tokens) and one full-attention layer."""
    if architecture == "gpt_neox":
        return build_tiny_lm()
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM

    _, tokenizer = build_tiny_lm()
    common = dict(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    if architecture == "llama":
        return LlamaForCausalLM(LlamaConfig(**common)).eval(), tokenizer
    config = Gemma3TextConfig(**common, head_dim=16, sliding_window=sliding_window,
                              layer_types=["sliding_attention", "full_attention"])
    return Gemma3ForCausalLM(config).eval(), tokenizer


ARCHITECTURES = ("gpt_neox", "llama", "gemma3")
# Built once: hypothesis runs many examples per test and function-scoped fixtures do not reset between them.
MODELS = {architecture: build_tiny(architecture) for architecture in ARCHITECTURES}

S = {
    "short": "the dog runs .",
    "agree": "the dogs run .",
    "long": "the dog near the cats that see a bird runs .",
    "other_start": "a cat sees the birds that see the dog .",
    "one_word": "dogs",
    "prefix": "the dog",
    "extended": "the dog runs . yes",
}
CASES = {
    "differs_mid_sentence": (S["short"], S["agree"]),
    "no_shared_token_beyond_the_prefix_token": (S["other_start"], S["short"]),
    "identical": (S["short"], S["short"]),
    "good_is_a_prefix_of_bad": (S["prefix"], S["short"]),
    "bad_is_a_prefix_of_good": (S["extended"], S["short"]),
    "different_lengths": (S["long"], S["short"]),
    "one_word_vs_long": (S["one_word"], S["other_start"]),
}
PAIRS = [MinimalPair(good, bad, "t", "g", name) for name, (good, bad) in CASES.items()]


def assert_same_as_independent(model, tokenizer, pairs, batch_size):
    good, bad = score_pairs(model, tokenizer, pairs, batch_size=batch_size)
    reference_good, reference_bad = score_pairs(model, tokenizer, pairs, batch_size=batch_size, shared_prefix=False)
    gap = torch.cat([good - reference_good, bad - reference_bad]).abs().max()
    assert gap <= TOLERANCE, gap
    decided = (good > bad) != (good < bad)  # identical sentences tie exactly on the shared path
    assert torch.equal((good > bad)[decided], (reference_good > reference_bad)[decided])
    # evaluate_pairs' call leaves out the shared prefix: the same margins.
    margin_good, margin_bad = score_pairs(model, tokenizer, pairs, batch_size=batch_size, include_shared_prefix=False)
    assert torch.allclose(margin_good - margin_bad, reference_good - reference_bad, atol=TOLERANCE, rtol=0)
    return good, bad


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_the_three_architectures_take_the_shared_prefix_path(architecture):
    model, tokenizer = MODELS[architecture]
    argument = shared_prefix_cache_argument(model)
    assert argument is not None
    calls = []
    hook = model.register_forward_pre_hook(lambda _, args, kwargs: calls.append(kwargs.get(argument)), with_kwargs=True)
    try:
        score_pairs(model, tokenizer, PAIRS[:1])
    finally:
        hook.remove()
    assert len(calls) == 2 and calls[0] is None and calls[1] is not None  # the prefix pass, then from its cache


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("batch_size", [2, 5, 64])  # one pair per batch; 2; all cases mixed in one batch
def test_shared_prefix_scores_equal_independent_scores(architecture, batch_size):
    model, tokenizer = MODELS[architecture]
    good, bad = assert_same_as_independent(model, tokenizer, PAIRS, batch_size)
    assert good[2] == bad[2]  # identical sentences


def test_the_sliding_window_is_active_in_the_tiny_gemma():
    """Otherwise the Gemma case would not check that padding keeps windowed attention exact."""
    model, tokenizer = MODELS["gemma3"]
    wide, _ = build_tiny("gemma3", sliding_window=64)
    narrow_scores, _ = score_pairs(model, tokenizer, PAIRS, shared_prefix=False)
    wide_scores, _ = score_pairs(wide, tokenizer, PAIRS, shared_prefix=False)
    assert (narrow_scores - wide_scores).abs().max() > 1e-3


@settings(max_examples=20, deadline=None)
@given(
    architecture=st.sampled_from(ARCHITECTURES),
    pairs=st.lists(
        st.tuples(*[st.lists(st.sampled_from(TINY_VOCABULARY), max_size=6)] * 3).map(
            lambda parts: (" ".join(parts[0] + parts[1]) or "dog", " ".join(parts[0] + parts[2]) or "cat")
        ),
        min_size=1, max_size=8,
    ),
    batch_size=st.integers(min_value=1, max_value=9),
)
def test_any_pairs_any_batch_size_equal_independent_scores(architecture, pairs, batch_size):
    model, tokenizer = MODELS[architecture]
    assert_same_as_independent(model, tokenizer, [MinimalPair(g, b, "t", "g", str(i)) for i, (g, b) in enumerate(pairs)], batch_size)


class WithoutCache(torch.nn.Module):
    """A model whose forward takes no cache or position ids, like some remote-code models."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config = model, model.config

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask)


def test_a_model_without_a_cache_argument_is_scored_sentence_by_sentence():
    model, tokenizer = MODELS["gpt_neox"]
    wrapped = WithoutCache(model).eval()
    assert shared_prefix_cache_argument(wrapped) is None
    good, bad = score_pairs(wrapped, tokenizer, PAIRS)
    reference_good, reference_bad = score_pairs(model, tokenizer, PAIRS, shared_prefix=False)
    assert torch.equal(good, reference_good) and torch.equal(bad, reference_bad)
    result = evaluate_pairs(wrapped, tokenizer, PAIRS)
    assert result.overall.pairs == len(PAIRS)
