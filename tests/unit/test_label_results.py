"""label.py's results.json is written from `LabelResults` and read back only through it: the same records in and out,
fields a kind of run lacks left out of the file, and a file of another schema (or a stray or missing field, at any
depth) refused with one line."""

import json
import re

import pytest

from gradspace.errors import GradspaceError
from gradspace.labeling.results import (
    SCHEMA_VERSION,
    Baselines,
    ExampleCounts,
    FeatureLabel,
    LabelResults,
    ModelSummary,
    OracleSummary,
    PromptSummary,
    ScoredLabel,
    Selection,
    UnlabelledFeature,
)
from gradspace.utils.io import split_timings

pytestmark = pytest.mark.unit


def label_results() -> LabelResults:
    scan = ScoredLabel(label="mammal", token_ids=[7], accepted=True, heldout_accuracy=1.0, heldout_auroc=1.0, objective=0.2,
                       n_scored=40, seconds=0.5)
    labelled = FeatureLabel(
        feature="mammal", oracle=OracleSummary("mammal", 1.0, 0.9), method="scan", label="mammal", label_token_ids=[7],
        accepted=True, selection=Selection(found_by="vocabulary_scan", objective=0.2, n_candidates=40, seconds=0.5,
                                           ranking=[["mammal", 0.2]]),
        objective=0.2, heldout_accuracy=1.0, heldout_auroc=1.0, heldout_examples=ExampleCounts(3, 30), top_activating=["dog"],
        baselines=Baselines(first_listed=ScoredLabel(label="dog", token_ids=[9], accepted=False, heldout_accuracy=0.5,
                                                     heldout_auroc=0.6), vocabulary_scan=scan),
        example_prompt="is a cow a mammal ?", wall_seconds=1.5)
    unlabelled = UnlabelledFeature(feature="bird", oracle=OracleSummary("bird", 0.5, 0.5), note="oracle near chance")
    return LabelResults(model=ModelSummary("synth-1m", "main", "/m"), prompt=PromptSummary("synth", "is {word} a {label} ?",
                                                                                           ["yes", "no"], None),
                        sae=None, readout="answer", method="scan", scorer=None, delphi=None, oracle_seconds=2.0,
                        train_seconds=0.0, steps=0, features=[labelled, unlabelled], trajectory=[], config={"seed": 0})


def written(results: LabelResults) -> dict:
    """What results.json holds: the JSON without its timings (they go to timings.json)."""
    return split_timings(json.loads(json.dumps(results.to_json())))[0]


def test_label_results_round_trip_through_results_json(tmp_path):
    results = label_results()
    data = written(results)
    assert data["schema_version"] == SCHEMA_VERSION
    # A kind of run writes only what it has: no soft label for a scan, no method for an unlabelled feature.
    assert "soft_label" not in data["features"][0] and "frequent_scan" not in data["features"][0]["baselines"]
    assert sorted(data["features"][1]) == ["feature", "label", "note", "oracle"] and data["features"][1]["label"] is None
    (tmp_path / "results.json").write_text(json.dumps(data))
    read = LabelResults.read(tmp_path / "results.json")
    assert isinstance(read.features[0], FeatureLabel) and isinstance(read.features[1], UnlabelledFeature)
    assert read.features[0].wall_seconds is None and read.oracle_seconds is None  # timings are not in the file
    assert read.features[0].baselines.present().keys() == {"first_listed", "vocabulary_scan"}
    assert written(read) == data
    assert LabelResults.from_json(results.to_json(), "here") == results


def changed(data: dict, place: tuple, value) -> dict:
    *parents, key = place
    inner = data
    for part in parents:
        inner = inner[part]
    if value is ...:
        del inner[key]
    else:
        inner[key] = value
    return data


@pytest.mark.parametrize("place, value, message", [
    (("schema_version",), ..., "results of schema_version None, this gradspace reads 1; "),
    (("schema_version",), 0, "results of schema_version 0, this gradspace reads 1"),
    (("extra",), 1, "unknown field extra for results of schema_version 1"),
    (("method",), ..., "no field method for"),
    (("features", 0, "baselines", "nearest"), {}, "unknown field nearest at features\\[0\\].baselines for"),
    (("features", 0, "selection", "ranking"), ..., "no field ranking at features\\[0\\].selection for"),
    (("features", 1, "oracle"), [], "no JSON object at features\\[1\\].oracle"),
])
def test_label_results_of_another_schema_are_refused_in_one_line(tmp_path, place, value, message):
    (tmp_path / "results.json").write_text(json.dumps(changed(written(label_results()), place, value)))
    with pytest.raises(GradspaceError, match=f"^{re.escape(str(tmp_path / 'results.json'))}: {message}.*rerun that label.py") as error:
        LabelResults.read(tmp_path / "results.json")
    assert "\n" not in str(error.value)
