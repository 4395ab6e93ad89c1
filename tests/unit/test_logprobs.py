"""Sentence encoding for scoring: the Rust fast path must give exactly the tokenizer's own ids."""

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from gradspace.evaluation.logprobs import encode_with_prefix
from gradspace.synth.tokenizer import build_word_tokenizer

pytestmark = pytest.mark.unit

SENTENCES = ["The dogs near the café run.", "  Leading spaces, and \"quotes\"!", "naïve résumé — 3.5 km", "", "the dog runs"]


def byte_level_bpe() -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    backend.train_from_iterator(SENTENCES * 20, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|endoftext|>", eos_token="<|endoftext|>")


@pytest.mark.parametrize("make", [byte_level_bpe, lambda: build_word_tokenizer("the dog dogs runs run".split())])
def test_encoding_matches_the_tokenizer_call(make):
    tokenizer = make()
    expected = [[tokenizer.bos_token_id, *ids] for ids in tokenizer(SENTENCES, add_special_tokens=False)["input_ids"]]
    assert encode_with_prefix(tokenizer, SENTENCES) == expected
    assert any(len(ids) > 2 for ids in expected)
