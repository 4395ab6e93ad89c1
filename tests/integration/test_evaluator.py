import math

import pytest
import torch

from gradspace.data.pairs import MinimalPair
from gradspace.evaluation.minimal_pairs import evaluate_pairs, score_sentences

pytestmark = pytest.mark.integration

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
