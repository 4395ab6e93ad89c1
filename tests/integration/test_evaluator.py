import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import TINY_VOCABULARY, build_tiny_lm
from gradspace.evaluation import logprobs
from gradspace.evaluation.minimal_pairs import evaluate_pairs, score_pairs, score_sentences
from gradspace.pairs import MinimalPair

pytestmark = pytest.mark.integration

# Built once: hypothesis runs many examples per test and function-scoped fixtures do not reset between them.
MODEL_AND_TOKENIZER = build_tiny_lm()

SENTENCES = [
    "the dog runs .", "the dogs run .", "the dog near the cats runs .", "a cat sees the birds that see the dog .",
    "is a dog a mammal ? yes", "dogs", "the cat sees herself .", "the dogs near a bird that sees the cat run .",
]


def reference_score(model, tokenizer, sentence: str) -> float:
    """One sentence at a time, no padding, no batching: log p(w_1..w_n | <bos>) summed token by token."""
    ids = [tokenizer.bos_token_id] + tokenizer(sentence, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    logprobs = torch.log_softmax(logits.double(), dim=-1)
    return sum(logprobs[t - 1, ids[t]].item() for t in range(1, len(ids)))


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_batched_scores_equal_the_unbatched_reference(tiny_lm, batch_size):
    model, tokenizer = tiny_lm
    batched = score_sentences(model, tokenizer, SENTENCES, batch_size=batch_size)
    reference = torch.tensor([reference_score(model, tokenizer, s) for s in SENTENCES], dtype=torch.float64)
    assert torch.allclose(batched, reference, atol=1e-4), (batched - reference).abs().max()


def test_a_large_vocabulary_gets_smaller_batches_with_the_same_scores(tiny_lm, monkeypatch):
    """Batches hold at most LOGITS_PER_PASS logits: here room for 12 positions, so 64-sentence batches split."""
    model, tokenizer = tiny_lm
    pairs = [MinimalPair(SENTENCES[i], SENTENCES[i + 1], "t", "g", str(i)) for i in range(0, 8, 2)]
    unlimited_sentences = score_sentences(model, tokenizer, SENTENCES, batch_size=64)
    unlimited_pairs = score_pairs(model, tokenizer, pairs, batch_size=64)
    logits_shapes = []
    model.register_forward_hook(lambda module, args, output: logits_shapes.append(tuple(output.logits.shape[:2])))
    monkeypatch.setattr(logprobs, "LOGITS_PER_PASS", 12 * model.config.vocab_size)
    limited_sentences = score_sentences(model, tokenizer, SENTENCES, batch_size=64)
    sentence_shapes, logits_shapes[:] = list(logits_shapes), []
    limited_pairs = score_pairs(model, tokenizer, pairs, batch_size=64)
    assert torch.allclose(limited_sentences, unlimited_sentences, atol=1e-5)
    assert all(torch.allclose(limited, unlimited, atol=1e-5) for limited, unlimited in zip(limited_pairs, unlimited_pairs))
    # one sentence, or one pair (its two continuations), may pass the budget alone
    assert len(sentence_shapes) > 3 and all(rows == 1 or rows * length <= 12 for rows, length in sentence_shapes), sentence_shapes
    assert len(logits_shapes) > 3 and all(rows <= 2 or rows * length <= 12 for rows, length in logits_shapes), logits_shapes


def test_accuracy_and_margin_follow_the_reference(tiny_lm):
    model, tokenizer = tiny_lm
    pairs = [MinimalPair(SENTENCES[i], SENTENCES[i + 1], "t1" if i < 4 else "t2", "g", str(i)) for i in range(0, 8, 2)]
    result = evaluate_pairs(model, tokenizer, pairs, batch_size=2)
    for task in ("t1", "t2"):
        margins = [reference_score(model, tokenizer, p.good) - reference_score(model, tokenizer, p.bad) for p in pairs if p.task == task]
        assert result.tasks[task].pairs == len(margins)
        assert result.tasks[task].accuracy == pytest.approx(sum(m > 0 for m in margins) / len(margins))
        assert result.tasks[task].margin == pytest.approx(sum(margins) / len(margins), abs=1e-4)
    assert result.pairs_per_second > 0 and math.isfinite(result.overall.margin)
    assert set(result.as_metrics("eval")) >= {"eval/accuracy", "eval/margin", "eval/accuracy/t1", "eval/margin/t2"}


def test_evaluation_restores_training_mode(tiny_lm):
    model, tokenizer = tiny_lm
    model.train()
    evaluate_pairs(model, tokenizer, [MinimalPair("the dog runs .", "the dog run .", "t", "g", "0")])
    assert model.training


@settings(max_examples=25, deadline=None)
@given(
    sentences=st.lists(st.lists(st.sampled_from(TINY_VOCABULARY), min_size=1, max_size=12).map(" ".join), min_size=1, max_size=9),
    batch_size=st.integers(min_value=1, max_value=10),
)
def test_any_sentences_any_batch_size_match_the_reference(sentences, batch_size):
    model, tokenizer = MODEL_AND_TOKENIZER
    batched = score_sentences(model, tokenizer, sentences, batch_size=batch_size)
    reference = torch.tensor([reference_score(model, tokenizer, s) for s in sentences], dtype=torch.float64)
    assert torch.allclose(batched, reference, atol=1e-4)
    assert (batched < 0).all()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(TINY_VOCABULARY), st.sampled_from(TINY_VOCABULARY)), min_size=1, max_size=8))
def test_swapping_good_and_bad_negates_the_margin(word_pairs):
    model, tokenizer = MODEL_AND_TOKENIZER
    pairs = [MinimalPair(f"the {a} runs", f"the {b} runs", "t", "g", str(i)) for i, (a, b) in enumerate(word_pairs)]
    swapped = [MinimalPair(p.bad, p.good, "t", "g", p.id) for p in pairs]
    forward, backward = evaluate_pairs(model, tokenizer, pairs), evaluate_pairs(model, tokenizer, swapped)
    assert forward.tasks["t"].margin == pytest.approx(-backward.tasks["t"].margin, abs=1e-6)
    ties = sum(a == b for a, b in word_pairs)
    assert forward.tasks["t"].accuracy + backward.tasks["t"].accuracy == pytest.approx(1 - ties / len(pairs))
