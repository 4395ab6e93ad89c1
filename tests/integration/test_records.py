"""Activation records (feature=records): bad files stop with one line naming the file and line, exit 2 and nothing
written; a good file labels through the context-reading prompt, with the word-alone oracle beside it."""

import json
from pathlib import Path

import pytest

from test_bad_input import check_clean_failure, label_overrides, write

pytestmark = pytest.mark.integration


def record(feature: str, text: str, word: str, activation: float, occurrence: int = 0) -> dict:
    start = -1
    for _ in range(occurrence + 1):
        start = text.index(word, start + 1)
    return {"feature": feature, "text": text, "char_start": start, "char_end": start + len(word), "activation": activation}


def good_records() -> list[dict]:
    """'dog' is active after 'near' and inactive after 'that'; 'cat' the other way, so the word alone says nothing."""
    rows = []
    for index in range(6):
        rows.append(record("near_sense", f"the bird {'sees ' * (index % 3)}near the dog runs", "dog", 1.0))
        rows.append(record("near_sense", f"the bird {'sees ' * (index % 3)}that the dog runs", "dog", 0.0))
        rows.append(record("near_sense", f"a bird {'sees ' * (index % 3)}near a cat runs", "cat", 1.0))
        rows.append(record("near_sense", f"a bird {'sees ' * (index % 3)}that a cat runs", "cat", 0.0))
    return rows


def lines(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


BAD = {
    "empty file": ("\n", r"records\.jsonl holds no records"),
    "span outside its text": (lines([{**record("f", "the dog runs", "dog", 1.0), "char_end": 40}]),
                              r"records\.jsonl:1: the span \[4, 40\) lies outside its text of 12 characters"),
    "span off token boundaries": (lines([record("f", "the dogs runs", "dog", 1.0)]),
                                  r"records\.jsonl:1: the span 'dog' \[4, 7\) does not start and end on this tokenizer's token boundaries"),
    "no inactive example": (lines([record("f", "the dog runs", "dog", 1.0)] * 4),
                            r"records\.jsonl:1: feature 'f' has 4 active and 0 inactive records"),
    "a directory": (None, r"feature.path=.* is a directory"),
    "not JSON": ('{"feature": "f"\n', r"records\.jsonl:1: not valid JSON"),
    "activation not a number": (lines([{**record("f", "the dog runs", "dog", 1.0), "activation": "high"}]),
                                r"records\.jsonl:1: 'activation' must be a number, got 'high'"),
    "infinite activation": ('{"feature": "f", "text": "the dog", "char_start": 4, "char_end": 7, "activation": Infinity}\n',
                            r"records\.jsonl:1: activation inf is not a finite number"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_records_fail_cleanly(case, tiny_model_dir, tmp_path, capsys):
    text, expected = BAD[case]
    path = write(tmp_path / "records.jsonl", text) if text is not None else tmp_path / "a-folder.jsonl"
    path.mkdir(exist_ok=True) if text is None else None
    overrides = [*label_overrides(tiny_model_dir), "feature=records", f"feature.path={path}", "prompt=contextual"]
    check_clean_failure("label", overrides, tmp_path / "out", expected, capsys)


def test_records_label_through_the_context_with_the_word_alone_beside(tiny_model_dir, tmp_path):
    from hydra import compose, initialize_config_dir

    from gradspace.labeling.run import run
    from test_bad_input import ROOT

    path = write(tmp_path / "records.jsonl", lines(good_records()))
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("label", overrides=[*label_overrides(tiny_model_dir), "feature=records", f"feature.path={path}",
                                           "prompt=contextual", "label.method=scan", "+feature.labels.near_sense=[mammal]", f"paths.output_dir={tmp_path / 'out'}"])
    results = run(cfg).to_json()
    (feature,) = results["features"]
    assert results["method"] == "scan" and feature["selection"]["found_by"] == "vocabulary_scan"
    assert feature["oracle"]["label"] == "mammal" and "oracle_word_alone" in feature
    # The word alone cannot separate the classes: each word is active as often as it is inactive.
    positives = feature["heldout_examples"]["positive"]
    assert positives >= 2 and feature["heldout_examples"]["negative"] >= 2
    assert "near the dog" in feature["example_prompt"] or "near a cat" in feature["example_prompt"]
    assert Path(tmp_path / "out" / "results.json").is_file()


def test_a_long_text_keeps_only_the_context_nearest_the_word(tiny_model_dir, tmp_path):
    """A 100,000-character record once filled 11 GB: the prompt keeps the context's last feature.max_context_tokens."""
    from transformers import AutoTokenizer

    from gradspace.labeling.records import record_features

    text = "the bird sees " * 7000 + "near the dog runs"
    rows = [record("f", text, "dog", 1.0)] * 3 + [record("f", "the bird sees that the dog runs", "dog", 0.0)] * 3
    path = write(tmp_path / "records.jsonl", lines(rows))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    (feature,) = record_features(path, [], {}, 0.0, tokenizer, 0.3, 0.5, 0, 20, max_context_tokens=16)
    longest = max(len(e.context) for e in feature.train_positive + feature.validation_positive + feature.heldout_positive)
    assert longest == 16
    assert tokenizer.decode(list(feature.heldout_positive[0].context)).endswith("near the")
