"""Labeling end to end on a tiny GPT-NeoX trained in seconds on the questions "is a <word> a <category> ? yes|no",
so the right label is known: the run must recover it, and write its results."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from gradspace.errors import GradspaceError
from gradspace.labeling.config import DiscreteConfig, LabelingConfig
from gradspace.labeling.discrete import SOFT_LABEL_STAGES, HardLabelScorer, select_label
from gradspace.labeling.discriminator import Discriminator
from gradspace.labeling.features import singular_category_words
from gradspace.labeling.objective import slot_log_prior
from gradspace.labeling.prompts import Example, PromptBuilder, PromptSpec
from gradspace.labeling.results import LabelResults
from gradspace.labeling.run import run
from gradspace.labeling.soft_label import allowed_label_tokens
from gradspace.synth.tokenizer import build_word_tokenizer
from gradspace.utils.io import relative_to_run, split_timings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CATEGORIES = {"mammal": ["dog", "cat", "cow", "pig", "horse", "goat"], "bird": ["owl", "crow", "robin", "duck", "hen", "swan"],
              "fish": ["eel", "cod", "shark", "trout", "tuna", "carp"]}
WORDS = [w for words in CATEGORIES.values() for w in words]


def discrete(**changes) -> DiscreteConfig:
    """The shipped discrete step with `changes`."""
    from omegaconf import OmegaConf

    return DiscreteConfig(**{**OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "label.yaml").discrete), **changes})


def tiny_model(tokenizer, hidden=32, layers=2, seed=0):
    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(GPTNeoXConfig(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4, intermediate_size=2 * hidden, vocab_size=len(tokenizer),
        max_position_embeddings=64, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))


def train_on_questions(tokenizer, steps: int, true_repeats: int = 1, answer_only: bool = True):
    """A tiny model trained full-batch on "is a W a C ? yes|no" for every word and category, each true question
    `true_repeats` times; the loss on the answer token only, or on every token. Returns (model, final loss)."""
    model = tiny_model(tokenizer)
    texts = [f"is a {w} a {c} ? {'yes' if w in CATEGORIES[c] else 'no'}" for w in WORDS for c in CATEGORIES
             for _ in range(true_repeats if w in CATEGORIES[c] else 1)]
    ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer.encode(t)] for t in texts])
    labels = ids
    if answer_only:
        labels = torch.full_like(ids, -100)
        labels[:, -1] = ids[:, -1]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = model(input_ids=ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model, loss.item()


@pytest.fixture(scope="module")
def question_model(tmp_path_factory, one_thread):
    """Knows every answer of "is a W a C ?" (loss on the answer token only, full batch)."""
    tokenizer = build_word_tokenizer(["is", "a", "?", "yes", "no", "the", "big", *CATEGORIES, *WORDS], model_max_length=64)
    model, loss = train_on_questions(tokenizer, steps=300)
    assert loss < 0.05, "the tiny model did not learn the questions; the test's premise fails"
    directory = tmp_path_factory.mktemp("question_model")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    (directory / "corpus.txt").write_text("\n".join(f"the big {w} is a {c}" for c, ws in CATEGORIES.items() for w in ws * 3) + "\n")
    return directory


def label_cfg(model_dir: Path, out: Path, *overrides: str, word_lists: bool = True):
    negatives = ",".join(w for c, ws in CATEGORIES.items() if c != "mammal" for w in ws)
    features = [
        "feature=animals", f"+feature.sets.mammal=[{','.join(CATEGORIES['mammal'])}]",
        f"+feature.sets.bird=[{','.join(CATEGORIES['bird'])}]", "feature.ids=[mammal]", f"feature.negatives=[{negatives}]",
        "+feature.labels.mammal=[mammal]", "+feature.labels.bird=[bird]",
    ] if word_lists else []
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("label", overrides=[
            "model=local", f"model.path={model_dir}", "prompt.style=synth", "logger=none", "trainer.accelerator=cpu",
            f"paths.output_dir={out}", f"paths.cache_dir={out / 'cache'}", *features, "label.restarts=2", "label.steps=30",
            "label.method=descent",
            *overrides,
        ])


# The soft label alone must find the label: the discrete step only reads each restart's argmax (top=1) and adds no
# candidates of its own (no LM-prior words, no swaps), so with the optimiser off (label.steps=1) the test fails.
SOFT_LABEL_ONLY = ("discrete.top=1", "discrete.prior_top=0", "discrete.swap_rounds=0")


def test_soft_label_recovers_the_planted_label(question_model, tmp_path):
    # The model was trained on the answers only: its prediction at the label slot, the naturalness prior, is noise.
    summary = run(label_cfg(question_model, tmp_path, "label.kl_weight=0", "label.steps=60", *SOFT_LABEL_ONLY))
    results = json.loads((tmp_path / "results.json").read_text())
    assert results == split_timings(relative_to_run(summary.to_json(), tmp_path))[0]
    # Read back through the schema: the same results, timings aside (they went to timings.json).
    read = LabelResults.read(tmp_path / "results.json")
    (feature_read,), (feature_run,) = read.features, summary.features
    assert feature_read.wall_seconds is None and feature_read.baselines.vocabulary_scan.seconds is None
    assert feature_read.soft_label == feature_run.soft_label and feature_read.baselines.first_listed == feature_run.baselines.first_listed
    (feature,) = results["features"]
    assert feature["label"] == "mammal"
    assert feature["heldout_accuracy"] == 1.0 and feature["heldout_auroc"] == 1.0
    assert len(feature["top10"]) == 10 and 0.0 <= feature["probability"] <= 1.0
    # The most frequent positive word is no category name: the baseline must do worse than the label.
    baseline = feature["baselines"]["most_frequent_top_activating"]
    assert baseline["label"] in CATEGORIES["mammal"] and baseline["heldout_accuracy"] < 1.0
    assert feature["baselines"]["first_listed"]["label"] == singular_category_words()["mammal"][0]
    assert feature["example_prompt"].endswith("a mammal ?")
    assert results["steps"] == 60 and results["trajectory"]
    assert feature["selection"]["found_by"] in SOFT_LABEL_STAGES
    # Reported beside the label: the oracle (the category word by hand) and the soft label's own argmax, on held-out words.
    assert feature["oracle"]["label"] == "mammal" and feature["oracle"]["heldout_auroc"] == 1.0 and feature["accepted"]
    assert feature["soft_label"]["argmax"] == "mammal" and feature["soft_label"]["heldout_auroc"] == 1.0
    assert all("heldout_auroc" in entry for entry in feature["top10"])


def test_a_feature_its_own_name_cannot_tell_apart_gets_no_label(question_model, tmp_path):
    """With "fish" written down as the mammals' category word, the oracle is below chance: no label, the reason said."""
    results = run(label_cfg(question_model, tmp_path, "feature.labels.mammal=[fish]")).to_json()
    (feature,) = results["features"]
    assert feature["label"] is None and feature["oracle"]["heldout_auroc"] < 0.6 and "near chance" in feature["note"]
    assert results["steps"] == 0  # nothing optimised for it


def test_gradient_swaps_reach_the_label_from_a_wrong_start(question_model, one_thread):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = AutoModelForCausalLM.from_pretrained(question_model), AutoTokenizer.from_pretrained(question_model)
    builder = PromptBuilder(PromptSpec("synth", "is a {word} a {label} ?", ("yes", "no")), tokenizer, label_length=1)
    discriminator = Discriminator(model, builder)
    token = tokenizer.convert_tokens_to_ids
    positives = [Example(token(w)) for w in CATEGORIES["mammal"]]
    negatives = [Example(token(w)) for c in ("bird", "fish") for w in CATEGORIES[c]]
    allowed = allowed_label_tokens(tokenizer, builder, len(tokenizer), "all")
    scorer = HardLabelScorer(discriminator, positives, negatives, tokenizer.pad_token_id, allowed)

    swaps = scorer.swap_candidates([token("the")], top=5)
    assert len(swaps) == 5 and (token("the"),) not in swaps and all(allowed[t] for (t,) in swaps)
    # A soft label sure of a wrong word: its candidates alone keep the wrong word; the swaps walk to "mammal". On these
    # 18 validation words "the" orders the classes as well as "mammal" does (AUROC 1.0, a smaller margin), so the tie
    # rule would keep the soft label's "the": the strict ranking (tie_share=1.0) shows what the swaps reach.
    p = torch.zeros(1, 1, len(tokenizer))
    p[0, 0, token("the")] = 1.0
    stuck = select_label(scorer, p, discrete(top=1, swap_rounds=0, prior_top=0, tie_share=1.0))
    assert tokenizer.decode(stuck.best.label_ids).strip() == "the"
    found = select_label(scorer, p, discrete(top=1, swap_rounds=3, swap_top=8, swap_beam=2, prior_top=0, tie_share=1.0))
    assert tokenizer.decode(found.best.label_ids).strip() == "mammal" and found.best.balanced_accuracy == 1.0
    assert found.found_by[found.best.label_ids] == "gradient_swap" and stuck.found_by[stuck.best.label_ids] == "soft_label_top"
    assert select_label(scorer, p, discrete(top=1, swap_rounds=3, swap_top=8, swap_beam=2, prior_top=0)).best == stuck.best
    # The discrete step scores a fixed number of candidates at most, whatever its stages would propose.
    capped = select_label(scorer, p, discrete(top=1, swap_rounds=3, swap_top=8, swap_beam=2, prior_top=0, max_candidates=5))
    assert len(capped.scored) == 5 and len(found.scored) > 5


def prompt_forwards(model, builder: PromptBuilder, monkeypatch) -> list[int]:
    """The number of prompts in every forward of `model` from now on, but for the template's own prefix (which a
    discriminator runs once)."""
    forwards = []
    original = model.base_model.forward

    def counted(*args, **kwargs):
        ids = kwargs.get("input_ids")
        if ids is None or ids.tolist() != [builder.prefix_ids]:
            forwards.append((ids if ids is not None else kwargs["inputs_embeds"]).shape[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(model.base_model, "forward", counted)
    return forwards


def test_a_label_the_prompt_never_sees_is_scored_from_one_forward_per_example_set(one_thread, monkeypatch):
    """label_likelihood with a one-token label: the prompt is the same for every label, so the scorer runs it once
    and reads any number of labels (and their naturalness, and the swap gradient) from that one log q."""
    tokenizer = build_word_tokenizer(["is", "a", "?", "yes", "no", "the", *CATEGORIES, *WORDS])
    model = tiny_model(tokenizer, hidden=32).eval()
    builder = PromptBuilder(PromptSpec("plain", "is a {word} a {label} ?", None, readout="label_likelihood"), tokenizer, label_length=1)
    discriminator = Discriminator(model, builder)
    token = tokenizer.convert_tokens_to_ids
    allowed = allowed_label_tokens(tokenizer, builder, len(tokenizer), "all")
    scorer = HardLabelScorer(discriminator, [Example(token(w)) for w in CATEGORIES["mammal"]],
                             [Example(token(w)) for w in CATEGORIES["bird"]], tokenizer.pad_token_id, allowed, kl_weight=0.5)
    labels = [(token(w),) for w in ("mammal", "bird", "the", "dog")]
    expected = []
    for label in labels:  # one label at a time, each through a discriminator of its own (no slot logits kept)
        n = scorer.prompts.input_ids.shape[0]
        out = Discriminator(model, builder)(scorer.prompts, discriminator.embedding[[label]], torch.zeros(n, dtype=torch.long),
                            with_slot_logits=True, label_tokens=torch.tensor([label]))
        expected.append((out.scores, -slot_log_prior(out.item_slot_logits(), allowed)[:, 0, label[0]]))

    forwards = prompt_forwards(model, builder, monkeypatch)
    scores, surprisal = scorer.per_example_outputs(labels)
    scorer.score_labels(labels[:2])
    swaps = scorer.swap_candidates(labels[2], top=3)
    assert len(forwards) == 1
    for row, (want_scores, want_surprisal) in enumerate(expected):
        assert torch.allclose(scores[row], want_scores, atol=1e-5) and torch.allclose(surprisal[row], want_surprisal, atol=1e-5)
    assert len(swaps) == 3 and labels[2] not in swaps


def test_label_free_slot_logits_are_kept_per_prompt_within_a_bound(one_thread, monkeypatch):
    """The frozen LM's prediction at the label slot is computed once per distinct prompt: a word drawn again (by a
    later step, another feature, the discrete step) runs no forward, the values are those of a fresh forward, and
    beyond the byte bound the least recently used prompts are dropped."""
    tokenizer = build_word_tokenizer(["is", "a", "?", "yes", "no", "the", *CATEGORIES, *WORDS])
    model = tiny_model(tokenizer, hidden=32).eval()
    builder = PromptBuilder(PromptSpec("plain", "is a {word} a {label} ?", None, readout="label_likelihood"), tokenizer, label_length=1)
    batch = lambda words: builder.batch([Example(tokenizer.convert_tokens_to_ids(w)) for w in words], tokenizer.pad_token_id)  # noqa: E731
    first, second = batch(["dog", "owl", "eel"]), batch(["owl", "cat", "dog", "owl"])
    fresh = {words: Discriminator(model, builder).label_free_slot_logits(b) for words, b in (("first", first), ("second", second))}

    discriminator = Discriminator(model, builder)
    bounded = Discriminator(model, builder, slot_cache_bytes=2 * fresh["first"][0].nbytes)
    rows_run = prompt_forwards(model, builder, monkeypatch)
    assert torch.allclose(discriminator.label_free_slot_logits(first), fresh["first"], atol=1e-5)
    assert torch.allclose(discriminator.label_free_slot_logits(second), fresh["second"], atol=1e-5)
    assert torch.allclose(discriminator.label_free_slot_logits(first), fresh["first"], atol=1e-5)
    assert rows_run == [3, 1]  # the second batch ran only "cat"; the third nothing

    rows_run.clear()
    assert torch.allclose(bounded.label_free_slot_logits(first), fresh["first"], atol=1e-5)
    assert len(bounded._slot_cache) == 2
    assert torch.allclose(bounded.label_free_slot_logits(first), fresh["first"], atol=1e-5)
    assert rows_run == [3, 1]  # "dog", the least recently used, was dropped and ran again


def test_lm_prior_proposes_the_word_the_model_expects_at_the_label_slot(one_thread):
    """A model that has read "is a dog a mammal ? yes" more often than "is a dog a bird ? no" expects "mammal"
    after "is a dog a": the prior's candidates contain it before any optimisation."""
    tokenizer = build_word_tokenizer(["is", "a", "?", "yes", "no", "the", *CATEGORIES, *WORDS], model_max_length=64)
    model, _ = train_on_questions(tokenizer, steps=200, true_repeats=3, answer_only=False)
    builder = PromptBuilder(PromptSpec("synth", "is a {word} a {label} ?", ("yes", "no")), tokenizer, label_length=1)
    token = tokenizer.convert_tokens_to_ids
    scorer = HardLabelScorer(Discriminator(model.eval(), builder), [Example(token(w)) for w in CATEGORIES["mammal"]],
                             [Example(token(w)) for c in ("bird", "fish") for w in CATEGORIES[c]], tokenizer.pad_token_id,
                             allowed_label_tokens(tokenizer, builder, len(tokenizer), "all"))
    candidates = scorer.prior_candidates(top=1)
    assert token("mammal") in candidates and len(candidates) <= 2
    p = torch.zeros(1, 1, len(tokenizer))
    p[0, 0, token("the")] = 1.0
    chosen = select_label(scorer, p, discrete(top=1, swap_rounds=0, prior_top=1, tie_share=1.0))  # strict: see the swaps' test
    assert chosen.best.label_ids == (token("mammal"),) and chosen.found_by[chosen.best.label_ids] == "lm_prior"


def test_many_features_in_one_batch_with_multi_token_labels(question_model, tmp_path):
    results = run(label_cfg(question_model, tmp_path, "feature.ids=[mammal,bird]", "label.length=2", "label.steps=3",
                            "discrete.top=3", "discrete.sweeps=1")).to_json()
    assert [f["feature"] for f in results["features"]] == ["mammal", "bird"]
    assert all(len(f["label_token_ids"]) == 2 and len(f["label"].split()) == 2 for f in results["features"])
    assert len(results["trajectory"][0]["top_token"]) == 2  # one row of restarts per feature
    for point in results["trajectory"]:  # the per-feature trace: the objective's prediction term per restart
        losses = [loss for restarts in point["prediction_loss"] for loss in restarts]
        assert len(point["prediction_loss"]) == 2 and len(losses) == 2 * len(point["top_token"][0])
        assert 0 < sum(losses) / len(losses) <= point["loss"] + 1e-6  # the loss adds entropy and naturalness to it


def test_user_errors(question_model, tmp_path):
    with pytest.raises(GradspaceError, match="feature.ids is empty"):
        run(label_cfg(question_model, tmp_path, "feature.ids=[]"))
    with pytest.raises(GradspaceError, match="none of its words"):
        run(label_cfg(question_model, tmp_path, "feature.sets.mammal=[unicorn,dragon]"))
    with pytest.raises(GradspaceError, match="needs an SAE"):
        run(label_cfg(question_model, tmp_path, "feature=sae_latent", word_lists=False))


def test_sae_latent_is_labelled_end_to_end(question_model, tmp_path, caplog):
    # No sae.hook_name: the default is the middle layer, blocks.1 of this 2-layer model (asserted below).
    sae_overrides = ["sae=builtin", "sae.d_sae=16", "sae.k=2", "sae.steps=30",
                     "sae.batch_size=64", f"feature.corpus_path={question_model / 'corpus.txt'}"]
    cfg = label_cfg(question_model, tmp_path, "feature=sae_latent", *sae_overrides, word_lists=False)
    # Train (and cache) the built-in SAE first, to label latents that fire in both corpus splits but not everywhere.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gradspace.labeling.features import latent_columns, load_corpus, sae_codes
    from gradspace.labeling.sae_training import BuiltinSAEConfig, ensure_builtin_sae

    model, tokenizer = AutoModelForCausalLM.from_pretrained(question_model), AutoTokenizer.from_pretrained(question_model)
    corpus = load_corpus(LabelingConfig.from_config(cfg).feature, cfg.model, tmp_path / "cache")
    config = BuiltinSAEConfig(hook_name="blocks.1.hook_resid_post", d_sae=16, k=2, steps=30, batch_size=64)
    sae = ensure_builtin_sae(config, model, tokenizer, corpus.train, f"{question_model}@main", tmp_path / "cache")
    rates = [torch.cat([acts for _, acts in latent_columns(sae_codes(model, tokenizer, sae, texts), range(16))]).gt(0).float().mean(0)
             for texts in (corpus.train, corpus.heldout)]
    # Latents that fire on part of both splits, often enough in training to leave validation occurrences.
    firing = [i for i in range(16) if all(0 < float(rate[i]) < 1 for rate in rates) and 0.05 < float(rates[0][i]) < 0.95][:2]
    assert firing, "no latent of the tiny SAE fires on part of both splits"

    caplog.set_level("INFO", logger="gradspace")
    results = run(label_cfg(question_model, tmp_path, "feature=sae_latent", *sae_overrides, f"feature.ids=[{','.join(map(str, firing))}]",
                            "label.steps=2", "label.restarts=1", word_lists=False)).to_json()
    assert results["sae"]["hook_name"] == "blocks.1.hook_resid_post" and results["sae"]["d_sae"] == 16
    assert [f["feature"] for f in results["features"]] == [f"latent{i}" for i in firing]
    # A latent has no category word: its line says what it fires on, not "oracle AUROC n/a".
    for f in results["features"]:
        assert f"{f['feature']}: fires most on '{', '.join(dict.fromkeys(f['top_activating']))}' | label" in caplog.text
    # The held-out AUROC of each label, recomputed independently: every held-out prompt written out as text and run
    # by one plain forward, AUROC as the share of (active, inactive) pairs the yes-no logit difference orders right.
    from gradspace.labeling.features import sae_latent_features
    from gradspace.labeling.prompts import Example

    builder = PromptBuilder(PromptSpec("synth", cfg.prompt.families.synth.template, ("yes", "no")), tokenizer, label_length=1)
    yes, no = tokenizer.convert_tokens_to_ids(["yes", "no"])
    latents = sae_latent_features(firing, sae, *(sae_codes(model, tokenizer, sae, texts) for texts in (corpus.train, corpus.heldout)),
                                  0.0, int(cfg.feature.max_examples), 0)
    for feature, result in zip(latents, results["features"]):
        projection = result["baselines"]["vocabulary_projection"]
        assert len(projection["top10"]) == 10 and projection["heldout_auroc"] is not None

        def readout(example: Example) -> float:
            text = builder.render_text(example, result["label_token_ids"])
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([tokenizer.encode(text, add_special_tokens=False)])).logits[0, -1]
            return float(logits[yes] - logits[no])

        active = [readout(e) for e in feature.heldout_positive[:500]]
        inactive = [readout(e) for e in feature.heldout_negative[:500]]
        ordered = sum((a > b) + 0.5 * (a == b) for a in active for b in inactive) / (len(active) * len(inactive))
        assert result["heldout_auroc"] == pytest.approx(ordered, abs=1e-6)


def test_sae_latents_picked_by_the_rule_from_one_pass_over_each_split(question_model, tmp_path, monkeypatch):
    """feature.select_count: the rule picks the latents and the run labels those, reading each corpus split through
    the model once (the rule and the latents' examples share the training texts' codes)."""
    import gradspace.labeling.features as features

    passes = []
    read = features.token_activations

    def counted(lm, tokenizer, texts, hook_name, **kwargs):
        passes.append(len(texts))
        return read(lm, tokenizer, texts, hook_name, **kwargs)

    monkeypatch.setattr(features, "token_activations", counted)
    cfg = label_cfg(question_model, tmp_path, "feature=sae_latent", "sae=builtin", "sae.d_sae=16", "sae.k=2", "sae.steps=30",
                    "sae.batch_size=64", f"feature.corpus_path={question_model / 'corpus.txt'}", "feature.ids=[]",
                    "feature.select_count=2", "feature.select_density=[0.01,0.5]", "feature.select_min_words=2",
                    "label.steps=2", "label.restarts=1", word_lists=False)
    corpus = features.load_corpus(LabelingConfig.from_config(cfg).feature, cfg.model, tmp_path / "cache")
    results = run(cfg).to_json()
    selection = results["sae"]["selection"]
    assert len(selection["ids"]) == 2 and selection["eligible"] >= 2
    assert [f["feature"] for f in results["features"]] == [f"latent{i}" for i in selection["ids"]]
    assert passes == [len(corpus.train), len(corpus.heldout)]


@pytest.mark.parametrize("template", ["the big is a the big {word} a {label} ?", "the big {label} is a {word} ?"])
def test_two_pass_discriminator_matches_one_plain_forward(template, one_thread):
    """Label-independent tokens run once per prompt without autograd, the rest once per item: scores, slot logits
    and label gradients must equal one plain forward of each item's full prompt (the label after a word, and the
    label right after the template's prefix)."""
    tokenizer = build_word_tokenizer(["is", "a", "?", "yes", "no", "the", "big", *WORDS, *CATEGORIES])
    model = tiny_model(tokenizer, hidden=32).eval()
    builder = PromptBuilder(PromptSpec("synth", template, ("yes", "no")), tokenizer, label_length=2)
    discriminator = Discriminator(model, builder)
    batch = builder.batch([Example(tokenizer.convert_tokens_to_ids(w)) for w in ("dog", "owl", "eel")], tokenizer.pad_token_id)
    examples, rows = torch.tensor([0, 1, 2, 0, 2]), torch.tensor([0, 1, 0, 1, 1])
    soft = torch.randn(2, 2, 32, generator=torch.Generator().manual_seed(0), requires_grad=True)
    out = discriminator(batch, soft, rows, with_slot_logits=True, examples=examples)
    (out.scores.sum() + out.slot_logits.sum()).backward()

    reference = torch.randn(2, 2, 32, requires_grad=True)
    with torch.no_grad():
        reference.copy_(soft)
    prefix = len(builder.prefix_ids)
    expected_scores, expected_slots = [], []
    for example, row in zip(examples.tolist(), rows.tolist()):
        ids = torch.tensor([builder.prefix_ids + batch.input_ids[example, : batch.readout_positions[example] + 1].tolist()])
        inputs = model.get_input_embeddings()(ids)[0].clone()
        label = batch.label_positions[example] + prefix
        inputs[label] = reference[row]
        logits = model(inputs_embeds=inputs[None]).logits[0]
        yes, no = builder.answer_ids
        expected_scores.append(logits[-1, yes] - logits[-1, no])
        expected_slots.append(logits[label - 1])
    (torch.stack(expected_scores).sum() + torch.stack(expected_slots).sum()).backward()
    assert torch.allclose(out.scores, torch.stack(expected_scores).detach(), atol=1e-5)
    assert torch.allclose(out.slot_logits, torch.stack(expected_slots).detach(), atol=1e-4)
    assert torch.allclose(soft.grad, reference.grad, atol=1e-5) and soft.grad.abs().sum() > 0


@pytest.mark.parametrize("readout, template, neutral, length", [
    ("example_likelihood", "the big {label} is a {word}", "the big {word}", 2),  # one forward per label: the prompts share all but the word
    ("example_likelihood", "{context} the big {label} is a {word}", "the big {word}", 2),  # contexts differ: one per item
    ("label_likelihood", "is a {word} a {label} ?", None, 2),
    ("label_likelihood", "is a {word} a {label} ?", None, 1),  # one pass per prompt, no label embedding
])
def test_likelihood_readouts_match_one_plain_forward(readout, template, neutral, length, one_thread):
    """The likelihood readouts through the two passes equal their definitions computed by plain forwards: the word's
    log-probability after the label minus in the label-free prompt, or the label's expected log-probability p·log q
    after the word; and the label's gradient matches."""
    tokenizer = build_word_tokenizer(["is", "a", "?", "yes", "no", "the", "big", *WORDS, *CATEGORIES])
    model = tiny_model(tokenizer, hidden=32).eval()
    builder = PromptBuilder(PromptSpec("plain", template, None, readout=readout, neutral=neutral), tokenizer, label_length=length)
    discriminator = Discriminator(model, builder)
    contexts = [(tokenizer.convert_tokens_to_ids("the"),) * i if "{context}" in template else () for i in range(3)]
    batch = builder.batch([Example(tokenizer.convert_tokens_to_ids(w), c) for w, c in zip(("dog", "owl", "eel"), contexts)],
                          tokenizer.pad_token_id)
    assert discriminator.word_follows_one_stem(batch) == (readout == "example_likelihood" and not any(contexts))
    examples, rows = torch.tensor([0, 1, 2, 0, 2]), torch.tensor([0, 1, 0, 1, 1])
    generator = torch.Generator().manual_seed(0)
    soft = torch.randn(2, length, 32, generator=generator, requires_grad=True)
    probs = torch.softmax(torch.randn(2, length, len(tokenizer), generator=generator), -1).requires_grad_(True)
    out = discriminator(batch, soft, rows, examples=examples, label_probs=probs)
    out.scores.sum().backward()

    reference, reference_probs = soft.detach().clone().requires_grad_(True), probs.detach().clone().requires_grad_(True)
    prefix = len(builder.prefix_ids)
    expected, slot_log_ps = [], []
    for example, row in zip(examples.tolist(), rows.tolist()):
        ids = torch.tensor([builder.prefix_ids + batch.input_ids[example, : batch.readout_positions[example] + 1].tolist()])
        inputs = model.get_input_embeddings()(ids)[0].clone()
        label = batch.label_positions[example] + prefix
        inputs[label] = reference[row]
        log_p = torch.log_softmax(model(inputs_embeds=inputs[None]).logits[0], -1)
        if readout == "label_likelihood":
            expected.append((log_p[label - 1] * reference_probs[row]).sum())
            slot_log_ps.append(log_p[label[0] - 1].detach())
            continue
        word = ids[0, -1]
        neutral_ids, _ = builder.neutral(Example(int(word)))
        with torch.no_grad():
            neutral_log_p = torch.log_softmax(model(input_ids=torch.tensor([neutral_ids])).logits[0, -2], -1)[word]
        expected.append(log_p[-2, word] - neutral_log_p)
    torch.stack(expected).sum().backward()
    assert torch.allclose(out.scores, torch.stack(expected).detach(), atol=1e-5)
    if length > 1 or readout != "label_likelihood":
        assert torch.allclose(soft.grad, reference.grad, atol=1e-5) and soft.grad.abs().sum() > 0
    else:  # a one-token label is only predicted, never read
        assert soft.grad is None and not reference.grad.abs().sum()
    if readout == "label_likelihood":
        assert torch.allclose(probs.grad, reference_probs.grad, atol=1e-5) and probs.grad.abs().sum() > 0
    if readout == "label_likelihood" and length == 1:  # hard labels: the log-probability of exactly these tokens
        tokens = probs.detach().argmax(-1)
        hard = discriminator(batch, soft.detach(), rows, examples=examples, label_tokens=tokens).scores
        assert torch.allclose(hard, torch.stack([row_log_p[tokens[row, 0]] for row_log_p, row in zip(slot_log_ps, rows.tolist())]), atol=1e-5)


@pytest.mark.parametrize("readout, template, neutral", [
    ("answer", "is a {word} {label_article} {label} ?", None),
    ("example_likelihood", "the {label} is a {word}", "the big {word}"),
])
def test_a_hard_label_reads_as_its_token_where_the_model_scales_embeddings(readout, template, neutral, one_thread):
    """Gemma multiplies token embeddings by sqrt(hidden size) inside its embedding layer: a label's embedding row put
    in through inputs_embeds must get the same scale (as its article must), or the label is a near-zero vector."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    tokenizer = build_word_tokenizer(["is", "a", "an", "?", "yes", "no", "the", "big", *WORDS, *CATEGORIES, "animal"])
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, head_dim=32, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)).eval()
    builder = PromptBuilder(PromptSpec("plain", template, ("yes", "no") if readout == "answer" else None, readout=readout,
                                       neutral=neutral), tokenizer, label_length=1)
    discriminator = Discriminator(model, builder)
    assert discriminator.input_scale == pytest.approx(64 ** 0.5)
    words = [tokenizer.convert_tokens_to_ids(w) for w in ("dog", "owl", "eel")]
    scorer = HardLabelScorer(discriminator, [Example(t) for t in words[:1]], [Example(t) for t in words[1:]],
                             tokenizer.pad_token_id, allowed_label_tokens(tokenizer, builder, len(tokenizer), "all"))
    labels = [(tokenizer.convert_tokens_to_ids("animal"),), (tokenizer.convert_tokens_to_ids("mammal"),)]
    scores, _ = scorer.per_example_outputs(labels)
    for label, row in zip(labels, scores):
        for token, score in zip(words, row):
            text = builder.render_text(Example(token), label)
            with torch.no_grad():
                log_p = torch.log_softmax(model(input_ids=torch.tensor([tokenizer.encode(text, add_special_tokens=False)])).logits[0], -1)
            if readout == "answer":
                yes, no = builder.answer_ids
                expected = log_p[-1, yes] - log_p[-1, no]
            else:
                neutral_ids, _ = builder.neutral(Example(token))
                with torch.no_grad():
                    neutral_log_p = torch.log_softmax(model(input_ids=torch.tensor([neutral_ids])).logits[0, -2], -1)[token]
                expected = log_p[-2, token] - neutral_log_p
            assert float(score) == pytest.approx(float(expected), abs=1e-4)


def test_label_py_writes_results(question_model, tmp_path):
    """Also the `_target_` logger path: logger=csv gets the held-out metrics that results.json reports."""
    command = [sys.executable, str(ROOT / "label.py"), "model=local", f"model.path={question_model}", "prompt.style=synth",
               "logger=csv", "trainer.accelerator=cpu", f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}",
               "feature=animals", "feature.ids=[animals]", "feature.sets.animals=[dog,cat,cow,owl,eel]", "label.steps=2",
               "label.restarts=1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    (feature,) = json.loads((tmp_path / "run" / "results.json").read_text())["features"]
    assert feature["feature"] == "animals" and feature["label"]
    logged = {key: float(value) for row in csv.DictReader((tmp_path / "run" / "csv" / "metrics.csv").open())
              for key, value in row.items() if value}
    assert logged["heldout/auroc/animals"] == pytest.approx(feature["heldout_auroc"])


def test_labels_go_to_an_offline_wandb_run_as_a_table(question_model, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    results = run(label_cfg(question_model, tmp_path, "logger=wandb", "label.steps=2", "label.restarts=1")).to_json()
    (table_file,) = tmp_path.rglob("labels_*.table.json")
    table = json.loads(table_file.read_text())
    (row,) = table["data"]
    entry = dict(zip(table["columns"], row))
    (feature,) = results["features"]
    assert len(row) == len(table["columns"]) and entry["label"] == feature["label"]
    assert entry["baseline_frequent"] == feature["baselines"]["most_frequent_top_activating"]["label"]
    assert entry["baseline_first_listed"] == feature["baselines"]["first_listed"]["label"] == "dog"


def test_same_seed_writes_identical_results_and_timings_apart(question_model, tmp_path):
    overrides = ("feature.ids=[mammal,bird]", "label.steps=4")
    run(label_cfg(question_model, tmp_path, *overrides))
    first = (tmp_path / "results.json").read_text()
    run(label_cfg(question_model, tmp_path, *overrides))
    assert (tmp_path / "results.json").read_text() == first
    assert "seconds" not in first
    timings = json.loads((tmp_path / "timings.json").read_text())
    assert timings["train_seconds"] > 0 and all(entry["wall_seconds"] > 0 for entry in timings["features"])


def test_a_second_model_scores_labels_on_examples_spelled_by_its_own_tokenizer(question_model, tmp_path):
    """The scorer reads the optimiser's examples as text: ids from another vocabulary must reach it as the same words."""
    from gradspace.labeling.features import FeatureData
    from gradspace.labeling.scorer import SecondModelScorer
    from gradspace.models.loading import load_model

    source = build_word_tokenizer(["the", "big", *reversed(WORDS), *CATEGORIES])  # other ids for the same words
    examples = lambda words: [Example(source.convert_tokens_to_ids(w), (source.convert_tokens_to_ids("the"),)) for w in words]  # noqa: E731
    feature = FeatureData("mammal", [], [], examples(CATEGORIES["mammal"]), examples(CATEGORIES["bird"] + CATEGORIES["fish"]),
                          label_words=["mammal"])
    cfg = label_cfg(question_model, tmp_path, "model@evaluation.scorer_model=local", f"evaluation.scorer_model.path={question_model}")
    config = LabelingConfig.from_config(cfg)
    scorer = SecondModelScorer(config, load_model(cfg.evaluation.scorer_model, tmp_path / "cache", progress=False))
    right, wrong = scorer.score(feature, "mammal", source), scorer.score(feature, "fish", source)
    assert right["heldout_auroc"] == 1.0 and right["oracle_auroc"] == 1.0 and right["style"] == "synth"
    assert wrong["heldout_auroc"] < 0.5


def test_auto_descends_where_the_label_is_read_and_reports_the_scan_beside_it(question_model, tmp_path):
    """The yes/no question reads the label, so auto descends; its small vocabulary still affords the exact scan, which
    every result reports as a baseline with its objective (the descent's label can be no lower)."""
    results = run(label_cfg(question_model, tmp_path, "label.method=auto", "label.steps=2", "label.restarts=1")).to_json()
    (feature,) = results["features"]
    scan = feature["baselines"]["vocabulary_scan"]
    assert results["method"] == "descent" and feature["method"] == "descent"
    assert scan["n_scored"] > 20 and feature["objective"] >= scan["objective"] - 1e-6
