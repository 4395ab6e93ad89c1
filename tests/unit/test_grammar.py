"""The toy grammar: vocabulary, corpus sentences, and minimal pairs that differ in exactly the intended slot."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradspace.errors import GradspaceError
from gradspace.synth.grammar import (
    CATEGORIES,
    CATEGORY_WORDS,
    DIGITS,
    LICENSING_ADVERBS,
    NONLICENSING_ADVERBS,
    NOUNS,
    NUMBER_WORDS,
    PLURAL_DETERMINERS,
    SINGULAR_DETERMINERS,
    SYNTH_TASKS,
    VERBS,
    Grammar,
)

pytestmark = pytest.mark.unit

GRAMMAR = Grammar(0)
PAIRS_PER_TASK = 300
NOUN_NUMBER = {noun.singular: "sg" for noun in NOUNS} | {noun.plural: "pl" for noun in NOUNS}
NOUN_OF = {noun.singular: noun for noun in NOUNS} | {noun.plural: noun for noun in NOUNS}
# Every agreeing word: its singular and plural form.
AGREEING_FORMS = {(verb.third, verb.base) for verb in VERBS} | {("has", "have"), ("does", "do")}
AGREEMENT_NUMBER = {sg: "sg" for sg, _ in AGREEING_FORMS} | {pl: "pl" for _, pl in AGREEING_FORMS}


def _pairs(task: str, n: int = PAIRS_PER_TASK, seed: int = 0) -> list[tuple[list[str], list[str], int]]:
    """(good tokens, bad tokens, the one position where they differ)."""
    rng = random.Random(seed)
    result = []
    for _ in range(n):
        good, bad = GRAMMAR.pair(task, rng)
        good_tokens, bad_tokens = good.split(" "), bad.split(" ")
        assert len(good_tokens) == len(bad_tokens), (good, bad)
        diff = [i for i, (g, b) in enumerate(zip(good_tokens, bad_tokens)) if g != b]
        assert len(diff) == 1, (good, bad)
        result.append((good_tokens, bad_tokens, diff[0]))
    return result


def _nouns_before(tokens: list[str], slot: int) -> list[str]:
    return [token for token in tokens[:slot] if token in NOUN_NUMBER]


def test_vocabulary_size_and_order():
    assert 400 <= len(GRAMMAR.vocabulary) <= 800
    assert GRAMMAR.vocabulary == sorted(set(GRAMMAR.vocabulary))


def test_category_names_are_words_and_members_are_listed():
    vocabulary = set(GRAMMAR.vocabulary)
    assert set(CATEGORIES) == {"mammal", "bird", "fish", "person", "object", "place", "number", "animal"}
    assert set(CATEGORIES) <= vocabulary
    for members in CATEGORIES.values():
        assert members and set(members) <= vocabulary
    assert set(CATEGORIES["animal"]) == set(CATEGORIES["mammal"]) | set(CATEGORIES["bird"]) | set(CATEGORIES["fish"])
    assert {"dog", "dogs", "mice"} <= set(CATEGORIES["mammal"]) and "whale" in CATEGORIES["mammal"]
    assert {"king", "queens", "men"} <= set(CATEGORIES["person"])
    assert {"seven", "7"} <= set(CATEGORIES["number"])


def test_sentences_are_deterministic_in_the_rng():
    first = [GRAMMAR.sentence(random.Random(3)) for _ in range(5)]
    second = [Grammar(0).sentence(random.Random(3)) for _ in range(5)]
    assert first == second
    assert GRAMMAR.pair("sva_pp", random.Random(4)) == Grammar(0).pair("sva_pp", random.Random(4))


def test_sentences_are_tokenized_lowercase_and_end_in_punctuation():
    rng = random.Random(1)
    for _ in range(500):
        sentence = GRAMMAR.sentence(rng)
        assert sentence == sentence.lower() and "  " not in sentence and sentence == sentence.strip()
        tokens = sentence.split(" ")
        assert tokens[-1] == "." or tokens[-2] == "?", sentence


def test_corpus_covers_every_construction():
    rng = random.Random(2)
    corpus = [GRAMMAR.sentence(rng) for _ in range(5000)]
    joined = "\n".join(corpus)
    for fragment in (" that ", " near ", " has not ever ", "no ", " any ", " himself ", " herself ", " themselves ",
                     " eaten ", " is a mammal .", "? yes", "? no", " is a number .", " thinks that "):
        assert fragment in joined, fragment
    assert any(sentence.split(" ")[0] in NUMBER_WORDS + DIGITS for sentence in corpus)


def test_unknown_task_names_the_choices():
    with pytest.raises(GradspaceError, match="sva_simple"):
        GRAMMAR.pair("no_such_task", random.Random(0))


def test_tasks_and_groups():
    assert {"sva_simple", "sva_pp", "sva_subj_rc", "sva_obj_rc", "det_noun", "number_noun", "anaphor_number",
            "anaphor_gender", "npi_licensing", "irregular_participle"} <= set(SYNTH_TASKS)
    assert SYNTH_TASKS["sva_obj_rc"] == "agreement" and SYNTH_TASKS["number_noun"] == "determiner_noun"
    assert SYNTH_TASKS["anaphor_gender"] == "anaphor" and SYNTH_TASKS["npi_licensing"] == "npi"


@pytest.mark.parametrize("task", ["sva_simple", "sva_pp", "sva_subj_rc", "sva_obj_rc"])
def test_agreement_pairs_swap_the_main_verb_number(task):
    opposite_attractors = 0
    for good, bad, slot in _pairs(task):
        assert (good[slot], bad[slot]) in AGREEING_FORMS or (bad[slot], good[slot]) in AGREEING_FORMS
        nouns = _nouns_before(good, slot)
        head_number = NOUN_NUMBER[nouns[0]]
        assert AGREEMENT_NUMBER[good[slot]] == head_number, good
        if task == "sva_simple":
            assert len(nouns) == 1
        else:
            assert len(nouns) == 2, good
            opposite_attractors += NOUN_NUMBER[nouns[1]] != head_number
    if task != "sva_simple":
        # Attractors of both numbers, so matching the nearest noun is no shortcut.
        assert 0.35 < opposite_attractors / PAIRS_PER_TASK < 0.65


@pytest.mark.parametrize("task", ["det_noun", "number_noun"])
def test_determiner_pairs_swap_the_noun_number(task):
    numerals = {"one": "sg", "1": "sg"} | {word: "pl" for word in NUMBER_WORDS[1:] + DIGITS[1:]}
    determiners = {word: "sg" for word in SINGULAR_DETERMINERS} | {word: "pl" for word in PLURAL_DETERMINERS}
    cues = numerals if task == "number_noun" else determiners | {"an": "sg"}
    numbers = set()
    for good, bad, slot in _pairs(task):
        noun = NOUN_OF[good[slot]]
        assert {good[slot], bad[slot]} == {noun.singular, noun.plural}
        cue = good[slot - 1] if good[slot - 1] in cues else good[slot - 2]
        assert NOUN_NUMBER[good[slot]] == cues[cue], good
        numbers.add(cues[cue])
    assert numbers == {"sg", "pl"}


def test_anaphor_number_pairs_swap_reflexive_number():
    counts = {"himself": 0, "herself": 0, "themselves": 0}
    for good, bad, slot in _pairs("anaphor_number"):
        assert {good[slot], bad[slot]} in ({"himself", "themselves"}, {"herself", "themselves"})
        head = _nouns_before(good, slot)[0]
        expected = "themselves" if NOUN_NUMBER[head] == "pl" else {"m": "himself", "f": "herself"}[NOUN_OF[head].gender]
        assert good[slot] == expected, good
        counts[good[slot]] += 1
    assert min(counts.values()) > 0.15 * PAIRS_PER_TASK


def test_anaphor_gender_pairs_swap_himself_and_herself():
    counts = {"himself": 0, "herself": 0}
    for good, bad, slot in _pairs("anaphor_gender"):
        assert {good[slot], bad[slot]} == {"himself", "herself"}
        head = NOUN_OF[_nouns_before(good, slot)[0]]
        assert good[slot] == {"m": "himself", "f": "herself"}[head.gender], good
        counts[good[slot]] += 1
    assert abs(counts["himself"] - counts["herself"]) <= 0.15 * PAIRS_PER_TASK


@pytest.mark.parametrize("task, npi", [("npi_licensing", "ever"), ("npi_any", "any")])
def test_npi_pairs_swap_the_licensor_never_the_first_word(task, npi):
    kinds = set()
    for good, bad, slot in _pairs(task):
        assert slot > 0 and npi in good[slot + 1:], good
        if good[slot] == "no":
            kinds.add("determiner")
            assert bad[slot] in {"the", "a", "an", "this", "that", "these", "those", "some"}
            assert good[slot - 1] == "that"
        else:
            kinds.add("adverb")
            assert good[slot] in LICENSING_ADVERBS and bad[slot] in NONLICENSING_ADVERBS
            assert good[slot - 1] in ("has", "have")
        assert "not" not in bad and "never" not in bad and "no" not in bad
    assert kinds == {"determiner", "adverb"}


def test_irregular_participle_pairs_swap_past_and_participle():
    forms = {verb.participle: verb for verb in VERBS if verb.irregular_participle}
    forms |= {verb.past: verb for verb in VERBS if verb.irregular_participle}
    for good, bad, slot in _pairs("irregular_participle"):
        verb = forms[good[slot]]
        assert {good[slot], bad[slot]} == {verb.past, verb.participle}
        after_have = good[slot - 1] in ("has", "have") or good[slot - 2] in ("has", "have")
        assert (good[slot] == verb.participle) == after_have, good


def test_category_question_answers_are_true():
    answers = {"yes": 0, "no": 0}
    singular_of = {forms[0]: name for name, forms in CATEGORY_WORDS.items()}
    plural_of = {forms[1]: name for name, forms in CATEGORY_WORDS.items()}
    for good, bad, slot in _pairs("category_question"):
        assert slot == len(good) - 1 and good[slot - 1] == "?" and {good[slot], bad[slot]} == {"yes", "no"}
        subject = _nouns_before(good, len(good))[0]
        category = singular_of[good[-3]] if good[0] == "is" else plural_of[good[-3]]
        assert good[slot] == ("yes" if subject in CATEGORIES[category] else "no"), good
        answers[good[slot]] += 1
    assert abs(answers["yes"] - answers["no"]) < 0.2 * PAIRS_PER_TASK


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_any_seed_gives_one_word_pairs_in_the_vocabulary(seed):
    grammar = Grammar(seed)
    vocabulary = set(grammar.vocabulary)
    rng = random.Random(seed)
    for task in SYNTH_TASKS:
        good, bad = grammar.pair(task, rng)
        good_tokens, bad_tokens = good.split(" "), bad.split(" ")
        assert good != bad and len(good_tokens) == len(bad_tokens)
        assert sum(g != b for g, b in zip(good_tokens, bad_tokens)) == 1
        assert set(good_tokens) | set(bad_tokens) <= vocabulary
    for _ in range(20):
        assert set(grammar.sentence(rng).split(" ")) <= vocabulary
