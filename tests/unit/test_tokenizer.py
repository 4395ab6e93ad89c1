import pytest
from transformers import AutoTokenizer

from gradspace.errors import GradspaceError
from gradspace.synth.tokenizer import ENDOFTEXT, PADDING, SPECIAL_TOKENS, UNKNOWN, build_word_tokenizer

pytestmark = pytest.mark.unit

VOCABULARY = ["the", "dog", "dogs", "barks", "bark", ".", ","]


def test_special_tokens_take_the_lowest_ids_in_pythia_order():
    tokenizer = build_word_tokenizer(VOCABULARY)
    assert tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == [0, 1, 2]
    assert tokenizer.bos_token == tokenizer.eos_token == ENDOFTEXT
    assert tokenizer.pad_token == PADDING and tokenizer.unk_token == UNKNOWN
    assert tokenizer.convert_tokens_to_ids(VOCABULARY) == list(range(3, 3 + len(VOCABULARY)))
    assert len(tokenizer) == 3 + len(VOCABULARY)


def test_encoding_adds_no_special_tokens_and_maps_each_word_to_one_id():
    tokenizer = build_word_tokenizer(VOCABULARY)
    ids = tokenizer("the dogs bark .")["input_ids"]
    assert ids == tokenizer.convert_tokens_to_ids(["the", "dogs", "bark", "."])
    assert tokenizer("the dogs bark .", add_special_tokens=True)["input_ids"] == ids


def test_unknown_word_encodes_to_unk():
    tokenizer = build_word_tokenizer(VOCABULARY)
    ids = tokenizer("the cat barks .")["input_ids"]
    assert ids[1] == tokenizer.unk_token_id == 2
    assert tokenizer.decode(ids) == "the <unk> barks ."


def test_round_trip_through_save_and_auto_tokenizer(tmp_path):
    tokenizer = build_word_tokenizer(VOCABULARY, model_max_length=64)
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    sentence = "<|endoftext|> the dog barks , the dogs bark ."
    assert loaded(sentence)["input_ids"] == tokenizer(sentence)["input_ids"]
    assert loaded(sentence)["input_ids"][0] == 0  # a written <|endoftext|> is the special token, not <unk>
    assert loaded.get_vocab() == tokenizer.get_vocab()
    assert (loaded.bos_token_id, loaded.eos_token_id, loaded.pad_token_id, loaded.unk_token_id) == (0, 0, 1, 2)
    assert loaded.model_max_length == 64
    assert loaded.decode(loaded("the dogs bark .")["input_ids"]) == "the dogs bark ."


def test_padding_uses_the_padding_token_on_the_right():
    tokenizer = build_word_tokenizer(VOCABULARY)
    batch = tokenizer(["the dog barks .", "dogs"], padding=True)
    assert batch["input_ids"][1] == [tokenizer.convert_tokens_to_ids("dogs"), 1, 1, 1]
    assert batch["attention_mask"][1] == [1, 0, 0, 0]


def test_duplicate_words_keep_their_first_id():
    tokenizer = build_word_tokenizer(["the", "dog", "the"])
    assert len(tokenizer) == 5 and tokenizer.convert_tokens_to_ids("dog") == 4


@pytest.mark.parametrize("vocabulary", [["the", "big dog"], ["the", ""], ["the", "<unk>"], [ENDOFTEXT]])
def test_invalid_vocabulary_is_a_user_error(vocabulary):
    with pytest.raises(GradspaceError):
        build_word_tokenizer(vocabulary)
