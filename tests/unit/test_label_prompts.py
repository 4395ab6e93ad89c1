"""Prompt templating for the labeling discriminator: pieces, label slots, readout, errors."""

import pytest

from gradspace.errors import GradspaceError
from gradspace.labeling.config import prompt_config
from gradspace.labeling.prompts import Example, PromptBuilder, PromptSpec, resolve_prompt_spec
from gradspace.synth.tokenizer import build_word_tokenizer

pytestmark = pytest.mark.unit

ANSWER = {"readout": "answer", "answers": ["yes", "no"], "neutral": None, "system": None}
FAMILIES = {
    "synth": {"template": "is a {word} a {label} ?", **ANSWER},
    "plain": {"template": "is {word} {label} ?", **ANSWER},
    "chat": {"template": "is {word} {label} ?", **ANSWER},
    "kind": {"template": "{word} is a {label}", "readout": "label_likelihood", "answers": None, "neutral": None, "system": None},
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
    built, positions, _ = builder.build(Example(dog))
    assert built[0] == dog and built[1] == ids(tokenizer, "a")[0] and built[-1] == ids(tokenizer, "?")[0]
    assert positions == [2]
    batch = builder.batch([Example(dog), Example(ids(tokenizer, "cat")[0])], pad_id=tokenizer.pad_token_id)
    assert batch.input_ids.shape == (2, 4)
    assert batch.readout_positions.tolist() == [3, 3]
    mammal = ids(tokenizer, "mammal")[0]
    assert builder.render_text(Example(dog), [mammal]) == "<|endoftext|> is a dog a mammal ?"


def test_multi_token_label_takes_consecutive_slots(tokenizer):
    builder = PromptBuilder(PromptSpec("synth", "is a {word} a {label} ?", ("yes", "no")), tokenizer, label_length=3)
    built, positions, _ = builder.build(Example(ids(tokenizer, "dog")[0]))
    assert positions == [2, 3, 4] and len(built) == 6


def test_context_slot_inserts_preceding_tokens(tokenizer):
    builder = PromptBuilder(PromptSpec("synth", "{context} {word} . is a {word} a {label} ?", ("yes", "no")), tokenizer, 1)
    the, dog = ids(tokenizer, "the")[0], ids(tokenizer, "dog")[0]
    built, positions, _ = builder.build(Example(dog, context=(tokenizer.bos_token_id, the)))
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
    cfg = prompt_config({"style": "auto", "style_by_model": {"m": "kind"}, "add_bos": True, "families": FAMILIES})
    assert resolve_prompt_spec(cfg, tokenizer, "synth").style == "synth"
    assert resolve_prompt_spec(cfg, tokenizer, "local").style == "plain"
    assert resolve_prompt_spec(cfg, tokenizer, "local", "m").readout == "label_likelihood"  # the oracle's choice for model m
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
        prompt_config({"style": "poem", "style_by_model": {}, "add_bos": True, "families": FAMILIES})
    with pytest.raises(GradspaceError, match="prompt style 'poem' is unknown"):
        prompt_config({"style": "auto", "style_by_model": {"m": "poem"}, "add_bos": True, "families": FAMILIES})


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


def test_label_article_follows_the_label_and_mixes_for_soft_labels():
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from gradspace.labeling.discriminator import Discriminator

    words = ["is", "a", "an", "?", "yes", "no", "dog", "eagle", "mammal", "animal", "bird"]
    tok = build_word_tokenizer(words)
    builder = PromptBuilder(PromptSpec("synth", "is {article} {word} {label_article} {label} ?", ("yes", "no")), tok, label_length=1)
    animal, mammal, eagle, dog = (ids(tok, w)[0] for w in ("animal", "mammal", "eagle", "dog"))
    takes_an = builder.takes_an(len(tok))
    assert takes_an[animal] and takes_an[eagle] and not takes_an[mammal] and not takes_an[dog]
    assert builder.render_text(Example(eagle), [animal]) == "<|endoftext|> is an eagle an animal ?"
    assert builder.render_text(Example(dog), [mammal]) == "<|endoftext|> is a dog a mammal ?"

    torch.manual_seed(0)
    lm = GPTNeoXForCausalLM(GPTNeoXConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                          vocab_size=len(tok), max_position_embeddings=32)).eval()
    discriminator = Discriminator(lm, builder)
    batch = builder.batch([Example(dog), Example(eagle)], pad_id=tok.pad_token_id)
    assert batch.label_article_positions.tolist() == [2, 2]
    labels = discriminator.embedding[torch.tensor([[animal], [mammal]])]
    rows = torch.tensor([0, 1])
    with torch.no_grad():
        hard = discriminator(batch, labels, rows, an_weights=takes_an[[animal, mammal]].float()).scores
        # The same prompts written out as real tokens: "is a dog an animal ?" and "is an eagle a mammal ?".
        reference = torch.stack([
            lm(torch.tensor([tok.encode(text, add_special_tokens=False)])).logits[0, -1, [ids(tok, "yes")[0], ids(tok, "no")[0]]]
            for text in ("<|endoftext|> is a dog an animal ?", "<|endoftext|> is an eagle a mammal ?")
        ])
        assert torch.allclose(hard, reference[:, 0] - reference[:, 1], atol=1e-5)
        halfway = discriminator(batch, labels, rows, an_weights=torch.tensor([0.5, 0.5])).scores
    assert not torch.allclose(halfway, hard)
    with pytest.raises(ValueError, match="an_weights"):
        discriminator(batch, labels, rows)
