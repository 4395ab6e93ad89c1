"""The exact scan: every allowed token's objective from one table equals what the hard-label scorer computes label by
label, its minimum is the label, and two-token scans from cached prompt heads match the plain two-token forward."""

import pytest
import torch

from gradspace.data.word_frequency import english_frequencies
from gradspace.labeling.discrete import HardLabelScorer
from gradspace.labeling.discriminator import Discriminator
from gradspace.labeling.prompts import Example, PromptBuilder, PromptSpec
from gradspace.labeling.scan import beam_scan, frequent_tokens, vocabulary_scan
from gradspace.labeling.soft_label import allowed_label_tokens
from gradspace.synth.tokenizer import build_word_tokenizer
from test_label_run import CATEGORIES, WORDS, tiny_model  # the tiny model and categories of the labeling tests

pytestmark = pytest.mark.integration


def scorer_for(length: int, readout: str = "label_likelihood", template: str = "is a {word} a {label}", kl_weight: float = 0.3,
               neutral: str | None = None):
    tokenizer = build_word_tokenizer(["is", "a", "?", "yes", "no", "the", *CATEGORIES, *WORDS])
    torch.manual_seed(0)
    model = tiny_model(tokenizer, hidden=32).eval()
    builder = PromptBuilder(PromptSpec("plain", template, ("yes", "no") if readout == "answer" else None, readout=readout,
                                       neutral=neutral), tokenizer, label_length=length)
    discriminator = Discriminator(model, builder)
    token = tokenizer.convert_tokens_to_ids
    allowed = allowed_label_tokens(tokenizer, builder, len(tokenizer), "all")
    # Uneven prompt lengths are what the grouped two-token heads must handle: a context before some words.
    positives = [Example(token(w), (token("the"),) * (i % 2)) for i, w in enumerate(CATEGORIES["mammal"])]
    negatives = [Example(token(w)) for w in CATEGORIES["bird"] + CATEGORIES["fish"]]
    return discriminator, HardLabelScorer(discriminator, positives, negatives, tokenizer.pad_token_id, allowed, kl_weight)


@pytest.mark.parametrize("readout, template", [("label_likelihood", "is a {word} a {label}"),
                                               ("answer", "is a {word} a {label} ?")])
def test_the_scan_is_the_minimum_of_the_scorers_own_objective(readout, template):
    _, scorer = scorer_for(1, readout, template)
    scan = vocabulary_scan(scorer, keep=1000)
    labels = [(int(t),) for t in scorer.allowed.nonzero().flatten()]
    exact = {s.label_ids: s.objective for s in scorer.score_labels(labels)}
    assert scan.n_scored == len(labels) == len(scan.ranking)
    for ids, objective in scan.ranking:
        assert objective == pytest.approx(exact[ids], abs=1e-5)
    assert scan.label_ids == min(exact, key=exact.get)


def test_the_frequent_word_scan_is_the_minimum_over_the_words_most_frequent_in_english(monkeypatch):
    # A readout that reads the label, one forward per label (the prompts share all but their one-token word): the same
    # readout and naturalness as one forward per (label, example).
    discriminator, scorer = scorer_for(1, "example_likelihood", "the {label} is a {word}", neutral="a {word}")
    assert scorer.labels_per_forward == scorer.max_batch
    labels = [(int(t),) for t in scorer.allowed.nonzero().flatten()]
    per_label = scorer.per_example_outputs(labels)
    with monkeypatch.context() as patch:
        patch.setattr(Discriminator, "word_follows_one_stem", lambda self, batch: False)
        per_item = scorer.per_example_outputs(labels)
    for a, b in zip(per_label, per_item):
        assert torch.allclose(a, b, atol=1e-5) and b.abs().sum() > 0
    tokenizer = discriminator.builder.tokenizer
    tokens = frequent_tokens(tokenizer, scorer.allowed, 5)
    allowed = scorer.allowed.nonzero().flatten().tolist()
    by_frequency = sorted(allowed, key=lambda t: -english_frequencies([tokenizer.decode([t])])[0])
    assert tokens.tolist() == by_frequency[:5]
    scan = vocabulary_scan(scorer, keep=5, tokens=tokens)
    exact = {s.label_ids: s.objective for s in scorer.score_labels([(t,) for t in tokens.tolist()])}
    assert scan.n_scored == 5 and scan.label_ids == min(exact, key=exact.get)
    assert [ids for ids, _ in scan.ranking] == sorted(exact, key=exact.get)


def test_a_two_token_beam_matches_the_plain_two_token_forward():
    discriminator, scorer = scorer_for(2)
    firsts = [int(t) for t in scorer.allowed.nonzero().flatten()[:3]]
    scan = beam_scan(discriminator, scorer, firsts, keep=1000)
    labels = [ids for ids, _ in scan.ranking]
    exact = {s.label_ids: s.objective for s in scorer.score_labels(labels)}
    assert scan.n_scored == 3 * int(scorer.allowed.sum())
    for ids, objective in scan.ranking:
        assert objective == pytest.approx(exact[ids], abs=1e-4)
    assert scan.label_ids == min(exact, key=exact.get)


@pytest.mark.parametrize("columns_per_chunk", [8192, 100])
def test_every_latent_of_an_sae_gets_the_scan_of_its_own_occurrences(one_thread, monkeypatch, columns_per_chunk):
    """The whole-SAE path weighs each token's table row by its occurrences; for every latent the label must be what
    the plain scan picks from the same occurrences as examples, one row each, whether the columns are reduced in one
    block (the synthetic vocabulary) or in several (a real one)."""
    from gradspace.labeling import whole_sae
    from gradspace.labeling.features import sae_codes
    from gradspace.labeling.sae import SparseAutoencoder
    from gradspace.labeling.whole_sae import firing_positions, flatten, label_all_latents

    monkeypatch.setattr(whole_sae, "COLUMNS_PER_CHUNK", columns_per_chunk)

    discriminator, scorer = scorer_for(1)
    tokenizer, model = discriminator.builder.tokenizer, discriminator.lm
    torch.manual_seed(1)
    d_in, d_sae = model.config.hidden_size, 6
    sae = SparseAutoencoder(torch.randn(d_in, d_sae), torch.zeros(d_sae), torch.randn(d_sae, d_in), torch.zeros(d_in),
                            architecture="topk", k=2, hook_name="blocks.0.hook_resid_post")
    texts = [f"the {w} is a {c}" for c, ws in CATEGORIES.items() for w in ws]
    train, heldout = sae_codes(model, tokenizer, sae, texts[::2] * 3), sae_codes(model, tokenizer, sae, texts[1::2])
    labels, _ = label_all_latents(discriminator, scorer.allowed, train, heldout, sae.W_dec.detach(),
                                  model.get_output_embeddings().weight.detach(), kl_weight=0.3, negatives=40)
    assert labels and all(label.heldout_auroc is not None for label in labels)
    tokens, codes = flatten(train)
    pool = torch.randperm(len(tokens), generator=torch.Generator().manual_seed(0))[:40]
    for label in labels:
        fired = firing_positions(codes, 0.0)[label.latent]
        negatives = [int(p) for p in pool.tolist() if p not in set(fired.tolist())]
        plain = HardLabelScorer(discriminator, [Example(int(tokens[p])) for p in fired], [Example(int(tokens[p])) for p in negatives],
                                tokenizer.pad_token_id, scorer.allowed, kl_weight=0.3)
        scan = vocabulary_scan(plain)
        assert tokenizer.decode(list(scan.label_ids)).strip() == label.label
        assert scan.objective == pytest.approx(label.objective, abs=1e-3)


def test_heldout_scores_read_tokens_the_training_table_lacks_from_their_own_forward(one_thread):
    """Held-out tokens absent from training get a table over only the labels asked for; every score must equal the
    full table's, whichever of the two tables it comes from."""
    from gradspace.labeling.whole_sae import HeldoutScores, TokenTable

    discriminator, scorer = scorer_for(1)
    allowed = scorer.allowed.nonzero().flatten()
    tokenizer = discriminator.builder.tokenizer
    ids = lambda words: torch.tensor([tokenizer.convert_tokens_to_ids(w) for w in words])  # noqa: E731
    train = TokenTable(discriminator, ids(["dog", "cat", "eel"]), allowed)
    heldout = ids(["dog", "owl", "eel", "cod"])
    labels = ids(["mammal", "bird"])
    scores = HeldoutScores(discriminator, train, heldout, labels)
    assert sorted(scores.unseen.index) == sorted(ids(["owl", "cod"]).tolist())
    full = TokenTable(discriminator, heldout, allowed)
    for label in labels.tolist():
        expected = full.log_q[full.rows(heldout), full.column[label]]
        assert torch.allclose(scores(heldout, label), expected, atol=1e-5)
