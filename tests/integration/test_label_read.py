"""The seed's mechanism: a descent through a readout in which the LM reads the label (example_likelihood: how likely
the word is after "here is a <label> :"), on a tiny GPT-NeoX trained on such sentences, so the right label is known;
and the frequent-word scan of the same readout reported beside it."""

import random

import pytest
import torch
from transformers import AutoTokenizer

from conftest import run_benchmark
from gradspace.labeling.run import run
from gradspace.labeling.scan import frequent_tokens
from gradspace.labeling.vocabulary import word_tokens
from test_label_run import CATEGORIES, ROOT, SOFT_LABEL_ONLY, WORDS, label_cfg, tiny_model

pytestmark = pytest.mark.integration

READ_PROMPT = ("prompt.style=example_likelihood", "prompt.families.example_likelihood.template='here is a {label} : {word}'",
               "prompt.families.example_likelihood.neutral='here is a word : {word}'")


@pytest.fixture(scope="module")
def example_model(tmp_path_factory, one_thread):
    """Has read "here is a <category> : <word>" for every word of every category, and "here is a word : <word>"."""
    from gradspace.synth.tokenizer import build_word_tokenizer

    tokenizer = build_word_tokenizer(["here", "is", "a", ":", "word", *CATEGORIES, *WORDS], model_max_length=64)
    texts = [f"here is a {c} : {w}" for c, ws in CATEGORIES.items() for w in ws] + [f"here is a word : {w}" for w in WORDS]
    ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer.encode(t)] for t in texts])
    model = tiny_model(tokenizer)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(200):
        loss = model(input_ids=ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    directory = tmp_path_factory.mktemp("example_model")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def test_the_descent_finds_the_label_the_lm_reads_and_the_frequent_scan_stands_beside_it(example_model, tmp_path):
    # The soft label alone must find it (no LM-prior words, no swaps); the scan of every token is ruled out
    # (scan_max_items=1), so the frequent-word scan of the same readout is the baseline.
    results = run(label_cfg(example_model, tmp_path, *READ_PROMPT, *SOFT_LABEL_ONLY, "label.kl_weight=0", "label.steps=40",
                            "evaluation.scan_max_items=1", "evaluation.frequent_scan_words=4")).to_json()
    (feature,) = results["features"]
    assert results["readout"] == "example_likelihood" and results["method"] == "descent"
    assert feature["label"] == "mammal" and feature["heldout_auroc"] == 1.0
    assert feature["example_prompt"].endswith("here is a mammal :" + feature["example_prompt"].split(":")[-1])
    frequent = feature["baselines"]["frequent_scan"]
    assert frequent["n_words"] == 4 and "vocabulary_scan" not in feature["baselines"]
    # one of the four allowed words (3 letters or more, no stop words: label.yaml) most frequent in English
    tokenizer = AutoTokenizer.from_pretrained(example_model)
    most_frequent = tokenizer.batch_decode([[t] for t in frequent_tokens(tokenizer, word_tokens(tokenizer, len(tokenizer), 3, False), 4)])
    assert frequent["label"] in most_frequent and "mammal" not in most_frequent
    assert feature["descent_seconds"] > 0 and frequent["seconds"] > 0
    # The benchmarks' tables read these results (and their timings) as RESULTS.md's come from them.
    path = str(tmp_path / "results.json")
    read_tables = run_benchmark("label_read_tables.py", "--traces", path)
    assert "descent AUROC >= frequent scan's on 1 of 1" in read_tables
    # the objective's trace: the descent's label's objective against the scan's
    assert any(line.startswith("| mammal |") and line.endswith(("| no |", "| tie |", "| yes |"))
               for line in read_tables.splitlines())
    assert "accepted word: 1/1" in run_benchmark("label_tables.py", path)
    assert "(descent): 1 labelled; mean held-out AUROC label 1.000" in run_benchmark("label_scan_tables.py", path)


def test_restarts_start_at_the_lms_own_prediction_of_the_category(example_model, one_thread):
    """Each restart's soft label starts at one of the allowed tokens the LM finds most probable after the seed prompt
    listing the feature's training words, most probable first."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf
    from transformers import AutoModelForCausalLM

    from gradspace.labeling.config import SoftLabelConfig
    from gradspace.labeling.discriminator import Discriminator
    from gradspace.labeling.prompts import Example, PromptBuilder, PromptSpec
    from gradspace.labeling.seeding import predicted_categories
    from gradspace.labeling.soft_label import SoftLabel

    tokenizer = AutoTokenizer.from_pretrained(example_model)
    lm = AutoModelForCausalLM.from_pretrained(example_model).eval()
    allowed = word_tokens(tokenizer, len(tokenizer), 3, False)
    feature = SimpleNamespace(train_positive=[Example(tokenizer.convert_tokens_to_ids(w)) for w in CATEGORIES["bird"]])
    (predicted,) = predicted_categories(lm, tokenizer, [feature], "{words} : here is a", 3, allowed, 2, seed=0)
    words = random.Random(0).sample(CATEGORIES["bird"], 3)
    ids = [tokenizer.bos_token_id] + tokenizer.encode(", ".join(words) + " : here is a")
    with torch.no_grad():
        logits = lm(input_ids=torch.tensor([ids])).logits[0, -1].masked_fill(~allowed, float("-inf"))
    assert predicted == logits.topk(2).indices.tolist()

    builder = PromptBuilder(PromptSpec("plain", "here is a {label} : {word}", None, readout="example_likelihood",
                                       neutral="here is a word : {word}"), tokenizer, label_length=1)
    values = {**OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "label.yaml").label), "restarts": 2}
    module = SoftLabel(Discriminator(lm, builder), allowed, ["bird"], SoftLabelConfig(**values), torch.optim.Adam, total_steps=1,
                       seed_tokens=predicted)
    assert module.distribution()[:, 0].argmax(-1).tolist() == predicted
