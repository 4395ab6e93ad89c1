"""Prompt templating for the labeling discriminator: pieces, label slots, readout, errors."""

import pytest

from gradspace.errors import GradspaceError
from gradspace.labeling.prompts import Example, PromptBuilder, PromptSpec, resolve_prompt_spec
from gradspace.synth.tokenizer import build_word_tokenizer

pytestmark = pytest.mark.unit

FAMILIES = {
    "synth": {"template": "is a {word} a {label} ?", "answers": ["yes", "no"]},
    "plain": {"template": "is {word} {label} ?", "answers": ["yes", "no"]},
    "chat": {"template": "is {word} {label} ?", "answers": ["yes", "no"]},
}


@pytest.fixture(scope="module")
def tokenizer():
    return build_word_tokenizer(["is", "a", "?", "yes", "no", "dog", "cat", "mammal", "the", "."])


def ids(tokenizer, text):
    return tokenizer.encode(text, add_special_tokens=False)


def test_prefix_slots_and_readout(tokenizer):
    builder = PromptBuilder(PromptSpec("synth", FAMILIES["synth"]["template"], ("yes", "no")), tokenizer, label_length=1)
    assert builder.prefix_ids == [tokenizer.bos_token_id] + ids(tokenizer, "is a")
    dog = ids(tokenizer, "dog")[0]
    built, positions = builder.build(Example(dog))
    assert built[0] == dog and built[1] == ids(tokenizer, "a")[0] and built[-1] == ids(tokenizer, "?")[0]
    assert positions == [2]
    batch = builder.batch([Example(dog), Example(ids(tokenizer, "cat")[0])], pad_id=tokenizer.pad_token_id)
    assert batch.input_ids.shape == (2, 4)
    assert batch.readout_positions.tolist() == [3, 3]
    mammal = ids(tokenizer, "mammal")[0]
    assert builder.render_text(Example(dog), [mammal]) == "<|endoftext|> is a dog a mammal ?"


def test_multi_token_label_takes_consecutive_slots(tokenizer):
    builder = PromptBuilder(PromptSpec("synth", "is a {word} a {label} ?", ("yes", "no")), tokenizer, label_length=3)
    built, positions = builder.build(Example(ids(tokenizer, "dog")[0]))
    assert positions == [2, 3, 4] and len(built) == 6


def test_context_slot_inserts_preceding_tokens(tokenizer):
    builder = PromptBuilder(PromptSpec("synth", "{context} {word} . is a {word} a {label} ?", ("yes", "no")), tokenizer, 1)
    the, dog = ids(tokenizer, "the")[0], ids(tokenizer, "dog")[0]
    built, positions = builder.build(Example(dog, context=(tokenizer.bos_token_id, the)))
    # the BOS of the context is dropped: the prompt has its own
    assert builder.uses_context and built[:2] == [the, dog] and built[positions[0] - 2] == dog


@pytest.mark.parametrize("template", ["is a {word} a ?", "is a {word} {label} {label} ?", "is a dog a {label} ?"])
def test_template_without_exactly_one_label_and_a_word_is_an_error(tokenizer, template):
    with pytest.raises(GradspaceError, match=r"\{label\} exactly once"):
        PromptBuilder(PromptSpec("synth", template, ("yes", "no")), tokenizer, 1)


def test_answers_must_be_single_known_tokens(tokenizer):
    with pytest.raises(GradspaceError, match="not a single known token"):
        PromptBuilder(PromptSpec("synth", "is a {word} a {label} ?", ("yes", "maybe")), tokenizer, 1)


def test_label_length_must_be_positive(tokenizer):
    with pytest.raises(GradspaceError, match="label.length"):
        PromptBuilder(PromptSpec("synth", "is a {word} a {label} ?", ("yes", "no")), tokenizer, 0)


def test_auto_style_follows_the_model_family(tokenizer):
    cfg = {"style": "auto", "families": FAMILIES}
    assert resolve_prompt_spec(cfg, tokenizer, "synth").style == "synth"
    assert resolve_prompt_spec(cfg, tokenizer, "local").style == "plain"
    tokenizer.chat_template = "{% for m in messages %}<|endoftext|>{{ m['content'] }}{% endfor %}"
    try:
        spec = resolve_prompt_spec(cfg, tokenizer, "hf")
        assert spec.style == "chat"
        builder = PromptBuilder(spec, tokenizer, 1)
        assert builder.prefix_ids[0] == tokenizer.bos_token_id  # the chat template's own special token, not an added BOS
        assert len(builder.prefix_ids) == 2
    finally:
        tokenizer.chat_template = None


def test_unknown_style_is_an_error(tokenizer):
    with pytest.raises(GradspaceError, match="prompt.style"):
        resolve_prompt_spec({"style": "poem", "families": FAMILIES}, tokenizer, "synth")


def test_article_slot_realises_the_corpus_question_per_word():
    words = ["is", "a", "an", "?", "yes", "no", "dog", "eagle", "seven", "7", "mammal"]
    tokenizer = build_word_tokenizer(words)
    builder = PromptBuilder(PromptSpec("synth", "is {article} {word} a {label} ?", ("yes", "no")), tokenizer, 1)
    mammal = ids(tokenizer, "mammal")
    rendered = {w: builder.render_text(Example(ids(tokenizer, w)[0]), mammal) for w in ["dog", "eagle", "seven", "7"]}
    assert rendered == {
        "dog": "<|endoftext|> is a dog a mammal ?",
        "eagle": "<|endoftext|> is an eagle a mammal ?",
        "seven": "<|endoftext|> is seven a mammal ?",
        "7": "<|endoftext|> is 7 a mammal ?",
    }
    # Prompts of different lengths: each readout is its own last token, the label slot sits right after "a".
    batch = builder.batch([Example(ids(tokenizer, "dog")[0]), Example(ids(tokenizer, "seven")[0])], tokenizer.pad_token_id)
    assert batch.readout_positions.tolist() == [4, 3] and batch.label_positions.tolist() == [[3], [2]]


def test_article_falls_back_to_a_without_an_in_the_vocabulary():
    tokenizer = build_word_tokenizer(["is", "a", "?", "yes", "no", "owl", "mammal"])
    builder = PromptBuilder(PromptSpec("synth", "is {article} {word} a {label} ?", ("yes", "no")), tokenizer, 1)
    rendered = builder.render_text(Example(ids(tokenizer, "owl")[0]), ids(tokenizer, "mammal"))
    assert rendered == "<|endoftext|> is a owl a mammal ?"
