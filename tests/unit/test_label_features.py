"""Features, losses, metrics, label vocabulary and baselines of the labeling method (no model)."""

import sys
from collections import Counter

import pytest
import torch

from gradspace.errors import GradspaceError
from gradspace.labeling.baselines import most_frequent_token, vocabulary_projection
from gradspace.labeling.discrete import classification_metrics
from gradspace.labeling.features import LatentFirings, category_features, word_list_features, word_set_features
from gradspace.labeling.prompts import PromptBuilder, PromptSpec
from gradspace.labeling.soft_label import allowed_label_tokens
from gradspace.synth.grammar import CATEGORIES
from gradspace.synth.tokenizer import build_word_tokenizer

pytestmark = pytest.mark.unit

WORDS = ["dog", "cat", "cow", "pig", "owl", "crow", "hen", "eel", "cod", "tuna", "is", "a", "?", "yes", "no", "mammal"]


@pytest.fixture(scope="module")
def tokenizer():
    return build_word_tokenizer(WORDS)


def token(tokenizer, word):
    return tokenizer.convert_tokens_to_ids(word)


def test_word_set_feature_splits_words_disjointly(tokenizer):
    negatives = [token(tokenizer, w) for w in ["owl", "crow", "hen", "eel", "cod", "tuna", "dog"]]
    counts = Counter({token(tokenizer, "cow"): 5, token(tokenizer, "dog"): 2})
    (feature,) = word_set_features([("mammal", ["dog", "cat", "cow", "pig", "unicorn"], [])], negatives, tokenizer, 0.3, 0.3, 0, counts)
    parts = [feature.train_positive, feature.validation_positive, feature.heldout_positive]
    positives = {e.token for part in parts for e in part}
    assert positives == {token(tokenizer, w) for w in ["dog", "cat", "cow", "pig"]}  # unknown words dropped
    assert all(parts) and sum(len(part) for part in parts) == 4  # train, validation and held-out words are disjoint
    negative_tokens = {e.token for e in feature.train_negative + feature.validation_negative + feature.heldout_negative}
    assert token(tokenizer, "dog") not in negative_tokens and len(negative_tokens) == 6
    assert feature.top_activating_tokens[0] == token(tokenizer, "cow")  # the most frequent positive first


def test_features_share_one_split_of_the_negatives(tokenizer):
    # One draw of training negatives can then serve every feature of a batch, and no word is a training negative of
    # one feature and a held-out negative of another.
    negatives = [token(tokenizer, w) for w in WORDS]
    mammal, fish = word_set_features([("mammal", ["dog", "cat", "cow", "pig"], []), ("fish", ["eel", "cod", "tuna"], [])],
                                     negatives, tokenizer, 0.3, 0.3, 0, {})
    parts = ("train_negative", "validation_negative", "heldout_negative")
    for part in parts:
        own = {name: {e.token for e in getattr(feature, part)} for name, feature in (("mammal", mammal), ("fish", fish))}
        positives = {name: {e.token for e in feature.train_positive + feature.validation_positive + feature.heldout_positive}
                     for name, feature in (("mammal", mammal), ("fish", fish))}
        assert own["mammal"] - positives["fish"] == own["fish"] - positives["mammal"]
        assert not own["mammal"] & positives["mammal"] and not own["fish"] & positives["fish"]
    mammal_train = {e.token for e in mammal.train_negative}
    assert not mammal_train & {e.token for e in fish.heldout_negative + fish.validation_negative}


def test_a_word_list_without_corpus_ranks_its_words_by_english_frequency(tokenizer):
    # The list's author put "eel" first; English puts "dog" (1.3e-4) far above "cat", "cow" and "eel" (1.7e-6).
    # "is" is more frequent still, but a stop word cannot be a label, so the baseline is the next word.
    lists = {"animals": ["eel", "cow", "is", "dog", "cat", "hen", "owl"]}
    (feature,) = word_list_features(lists, {}, ["animals"], ["crow", "cod", "tuna", "pig"], tokenizer, 0.3, 0.25, 0, None)
    assert [token(tokenizer, w) for w in ("is", "dog", "cat")] == feature.top_activating_tokens[:3]
    allowed = torch.ones(len(tokenizer), dtype=torch.bool)
    allowed[token(tokenizer, "is")] = False
    assert most_frequent_token(feature.top_activating_tokens, allowed) == token(tokenizer, "dog")
    assert feature.first_listed_token == token(tokenizer, "eel")
    # A corpus, where given, decides instead.
    (feature,) = word_list_features(lists, {}, ["animals"], ["crow", "cod", "tuna", "pig"], tokenizer, 0.3, 0.25, 0,
                                    Counter({token(tokenizer, "hen"): 3}))
    assert feature.top_activating_tokens[0] == token(tokenizer, "hen")


def test_english_frequencies_without_wordfreq_say_how_to_install_it(tokenizer, monkeypatch):
    monkeypatch.setitem(sys.modules, "wordfreq", None)  # import wordfreq now raises ImportError
    with pytest.raises(GradspaceError, match="pip install wordfreq.*feature.corpus_path"):
        word_list_features({"animals": ["dog", "cat", "cow"]}, {}, ["animals"], None, tokenizer, 0.3, 0.25, 0, None)


def test_word_list_with_no_token_in_vocabulary_is_an_error(tokenizer):
    with pytest.raises(GradspaceError, match="none of its words"):
        word_list_features({"planets": ["mars", "venus"]}, {}, ["planets"], None, tokenizer, 0.3, 0.25, 0, None)


def test_unknown_feature_ids_are_errors(tokenizer):
    with pytest.raises(GradspaceError, match="not in feature.sets"):
        word_list_features({"animals": ["dog"]}, {}, ["plants"], None, tokenizer, 0.3, 0.25, 0, None)
    with pytest.raises(GradspaceError, match="not categories"):
        category_features(["vegetable"], tokenizer, 0.3, 0.25, 0, None)


def test_a_single_word_cannot_be_split_into_train_validation_and_heldout(tokenizer):
    with pytest.raises(GradspaceError, match="no validation_positive.*heldout_positive"):
        word_set_features([("one", ["dog"], [])], [token(tokenizer, "owl"), token(tokenizer, "eel")], tokenizer, 0.3, 0.25, 0, {})


def test_category_negatives_are_other_categories_words():
    tokenizer = build_word_tokenizer(sorted({w for words in CATEGORIES.values() for w in words}))
    (feature,) = category_features(["mammal"], tokenizer, 0.3, 0.25, 0, None)
    negatives = {tokenizer.decode([e.token]) for e in feature.train_negative + feature.validation_negative + feature.heldout_negative}
    assert "owl" in negatives and "dog" not in negatives and not negatives & set(CATEGORIES["mammal"])


def test_category_examples_are_singular_nouns_and_numerals():
    tokenizer = build_word_tokenizer(sorted({w for words in CATEGORIES.values() for w in words}))
    mammal, number = category_features(["mammal", "number"], tokenizer, 0.3, 0.25, 0, None)
    words = {tokenizer.decode([e.token]) for e in mammal.train_positive + mammal.validation_positive + mammal.heldout_positive}
    assert "dog" in words and "mouse" in words and not words & {"dogs", "mice", "wolves"}
    negatives = {tokenizer.decode([e.token]) for e in mammal.train_negative + mammal.validation_negative + mammal.heldout_negative}
    assert {"owl", "seven", "7"} <= negatives and not negatives & {"owls", "people", "men"}
    numerals = {tokenizer.decode([e.token]) for e in number.train_positive + number.validation_positive + number.heldout_positive}
    assert {"seven", "7"} <= numerals and len(numerals) == 40


def test_classification_metrics_calibrate_the_boundary_per_label():
    scores = torch.tensor([3.0, 1.0, -0.5, 0.5, -2.0, -3.0])
    targets = torch.tensor([1, 1, 1, 0, 0, 0])
    accuracy, auroc, _, threshold = classification_metrics(scores, targets)
    assert threshold == pytest.approx((3.5 / 3 - 4.5 / 3) / 2)  # the midpoint of the two classes' means
    assert accuracy == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert auroc == pytest.approx(8 / 9)
    # A label that shifts every score ("Yes" to everything) keeps its ranking and, calibrated, its accuracy.
    assert classification_metrics(scores + 10, targets)[:2] == pytest.approx((accuracy, auroc))
    # A boundary given from elsewhere (held-out examples: the validation examples') is used as it is.
    assert classification_metrics(scores, targets, threshold=2.0)[0] == pytest.approx((1 / 3 + 1) / 2)


def test_label_vocabulary_excludes_special_and_non_word_tokens(tokenizer):
    builder = PromptBuilder(PromptSpec("synth", "is a {word} a {label} ?", ("yes", "no")), tokenizer, 1)
    allowed = allowed_label_tokens(tokenizer, builder, len(tokenizer) + 3, "words")
    assert not allowed[tokenizer.all_special_ids].any()
    assert not allowed[token(tokenizer, "?")] and allowed[token(tokenizer, "mammal")]
    assert not allowed[len(tokenizer):].any()  # padding rows of the embedding matrix
    assert allowed_label_tokens(tokenizer, builder, len(tokenizer), "all")[token(tokenizer, "?")]
    # Words only: no stop words unless asked, no words shorter than min_letters (fragments).
    words = allowed_label_tokens(tokenizer, builder, len(tokenizer), "words", min_letters=1, stop_words=False)
    assert words[token(tokenizer, "mammal")] and not words[token(tokenizer, "is")]
    assert allowed_label_tokens(tokenizer, builder, len(tokenizer), "words", min_letters=1, stop_words=True)[token(tokenizer, "is")]
    words = allowed_label_tokens(tokenizer, builder, len(tokenizer), "words", min_letters=4, stop_words=True)
    assert words[token(tokenizer, "tuna")] and not words[token(tokenizer, "cow")]


def test_baselines():
    allowed = torch.tensor([False, True, True, True])
    assert most_frequent_token([0, 0, 0, 2, 3, 3], allowed) == 3
    assert most_frequent_token([2, 3], allowed) == 2  # tie: the earlier (stronger) one
    assert most_frequent_token([0], allowed) is None
    unembedding = torch.tensor([[5.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    assert vocabulary_projection(unembedding, torch.tensor([1.0, 0.2]), allowed, top=2) == [1, 2]


def test_a_step_draws_one_set_of_negatives_for_all_features():
    # 3 lists against 40 other words: the features share their negatives' pool, so a step's prompts are each
    # feature's 4 positives and 4 negatives common to all; each feature's negatives are uniform over its pool.
    from collections import Counter

    from gradspace.labeling.soft_label import BalancedExamples

    lists = {name: [f"{name}{i}" for i in range(8)] for name in ("ant", "bee", "cat")}
    others = [f"other{i}" for i in range(40)]
    tokenizer = build_word_tokenizer(["is", "a", "?", "yes", "no", *[w for words in lists.values() for w in words], *others])
    builder = PromptBuilder(PromptSpec("plain", "is a {word} a {label} ?", None, readout="label_likelihood"), tokenizer, 1)
    for negatives, shared_pool in ((others, True), ([*others, *lists["ant"], *lists["bee"]], False)):
        features = word_set_features([(name, words, []) for name, words in lists.items()],
                                     [token(tokenizer, w) for w in negatives], tokenizer, 0.25, 0.25, 0, {})
        stream = iter(BalancedExamples(features, builder, batch_size=8, pad_id=tokenizer.pad_token_id, seed=0))
        drawn = [Counter() for _ in features]
        for _ in range(300):
            batch = next(stream)
            prompts = batch["input_ids"][batch["example_index"]]
            for index, feature in enumerate(features):
                mine = (batch["feature_index"] == index) & (batch["targets"] == 0)
                words = {int(row[batch["label_positions"][0, 0] - 2]) for row in prompts[mine]}
                assert words <= {e.token for e in feature.train_negative}
                drawn[index].update(int(row[batch["label_positions"][0, 0] - 2]) for row in prompts[mine])
            if shared_pool:
                assert batch["input_ids"].shape[0] == 3 * 4 + 4
        for index, feature in enumerate(features):
            counts = [drawn[index][e.token] for e in feature.train_negative]
            mean = sum(counts) / len(counts)
            assert min(counts) > 0.6 * mean and max(counts) < 1.4 * mean


def test_the_latent_rule_counts_firings_words_and_density():
    """Latent 0 fires on three words, latent 1 on one word only, latent 2 on punctuation, latent 3 everywhere,
    latent 4 never: with at least 2 distinct words, 90% of firings on words and a density of at most 0.5, only
    latent 0 is eligible."""
    words = torch.tensor([True, True, True, True, False])  # tokens 0-3 are words, 4 is "?"
    tokens = torch.tensor([0, 1, 2, 3, 4, 0, 1, 4])
    fired = torch.zeros(len(tokens), 5, dtype=torch.bool)
    fired[[0, 1, 2], 0] = True
    fired[[0, 5], 1] = True
    fired[[4, 7], 2] = True
    fired[:, 3] = True
    firings = LatentFirings(5, words)
    firings.add(fired[:4], tokens[:4])
    firings.add(fired[4:], tokens[4:])  # streamed in two batches: the counts add up, distinct words are not recounted
    assert firings.tokens == 8 and firings.firings.tolist() == [3, 2, 2, 8, 0] and firings.word_firings.tolist() == [3, 2, 0, 6, 0]
    assert firings.distinct_words().tolist() == [3, 1, 0, 4, 0]
    chosen = firings.pick(1, density=[0.1, 0.5], word_share=0.9, min_words=2)
    assert chosen.ids == [0] and chosen.eligible == 1 and chosen.density == {0: 3 / 8} and chosen.distinct_words == {0: 3}
    with pytest.raises(GradspaceError, match="only 1 SAE latents meet the selection rule"):
        firings.pick(2, density=[0.1, 0.5], word_share=0.9, min_words=2)
    # Evenly spaced ranks of density: of 0 (3/8), 1 (2/8), 3 (8/8) eligible under looser bounds, the rarest and commonest.
    assert firings.pick(2, density=[0.0, 1.0], word_share=0.7, min_words=1).ids == [1, 3]
