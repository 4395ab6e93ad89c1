"""What one `label.py` run found: written as its `results.json` and read back only through `LabelResults`.

Every object of the file is a `JsonRecord`: a dataclass written field by field, where a field named in
`OMITTED_WHEN_NONE` is left out of the file rather than written as null (what a kind of run does not produce: a
scan has no soft label, a word list no delphi scores), and read back with the same check of every field.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from gradspace.errors import GradspaceError
from gradspace.utils.io import is_timing
from gradspace.utils.results_file import checked_fields, read_json

# Bump when a field is added, removed or changes meaning; a file of another version is refused, not misread.
SCHEMA_VERSION = 1
RERUN = "rerun that label.py"


@dataclass
class JsonRecord:
    OMITTED_WHEN_NONE: ClassVar[tuple[str, ...]] = ()

    def to_json(self) -> dict[str, Any]:
        return {item.name: encoded(getattr(self, item.name)) for item in fields(self)
                if not (getattr(self, item.name) is None and item.name in self.OMITTED_WHEN_NONE)}

    @classmethod
    def describes(cls, data: dict) -> bool:
        """Whether `data` is of this record where a field holds one of several records."""
        return True

    @classmethod
    def from_json(cls, data: Any, source: str, place: str = "") -> "JsonRecord":
        """The record of `data`, read from `source` at `place` (empty: the file's top level, with its schema_version);
        timings (in timings.json, not the file) read as None."""
        optional = (*cls.OMITTED_WHEN_NONE, *(item.name for item in fields(cls) if is_timing(item.name)))
        values = checked_fields(cls, data, SCHEMA_VERSION, source, RERUN, optional=optional, place=place)
        hints = typing.get_type_hints(cls)
        return cls(**{name: decoded(hints[name], value, source, f"{place}.{name}" if place else name)
                      for name, value in values.items()})


def encoded(value: Any) -> Any:
    if isinstance(value, JsonRecord):
        return value.to_json()
    if isinstance(value, list):
        return [encoded(item) for item in value]
    if isinstance(value, dict):
        return {key: encoded(item) for key, item in value.items()}
    return value


def decoded(hint: Any, value: Any, source: str, place: str) -> Any:
    """`value` as read from the file, its records built by the type `hint` of the field that holds it."""
    if value is None:
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        kinds = [kind for kind in args if kind is not type(None)]
        kind = kinds[0] if len(kinds) == 1 else next(k for k in kinds if k.describes(value))
        return decoded(kind, value, source, place)
    if origin in (list, dict) and not isinstance(value, origin):
        raise GradspaceError(f"{source}: no JSON {'list' if origin is list else 'object'} at {place}; {RERUN} with this version")
    if origin is list:
        return [decoded(args[0], item, source, f"{place}[{index}]") for index, item in enumerate(value)]
    if origin is dict:
        return {key: decoded(args[1], item, source, f"{place}.{key}") for key, item in value.items()}
    if isinstance(hint, type) and issubclass(hint, JsonRecord):
        return hint.from_json(value, source, place)
    return value


@dataclass
class OracleSummary(JsonRecord):
    """The category word as the label, scored on the held-out examples."""

    label: str
    heldout_auroc: float
    heldout_accuracy: float


@dataclass(kw_only=True)
class ScoredLabel(JsonRecord):
    """A label scored on the held-out examples at its decision boundary on the validation examples."""

    label: str
    token_ids: list[int]
    accepted: bool | None  # None: the feature has no category word written down (or the label is of another length)
    heldout_accuracy: float | None  # None: a baseline of another length than the run's labels is not scored
    heldout_auroc: float | None
    top10: list[str] | None = None  # the vocabulary projection's top 10
    objective: float | None = None  # a scan's objective at its label
    n_scored: int | None = None  # the vocabulary scan: labels scored
    n_words: int | None = None  # the frequent-word scan: words scanned
    seconds: float | None = None  # a scan's time
    OMITTED_WHEN_NONE = ("top10", "objective", "n_scored", "n_words", "seconds")


@dataclass(kw_only=True)
class Baselines(JsonRecord):
    """The labels found without the method, each where the run has it."""

    most_frequent_top_activating: ScoredLabel | None = None
    first_listed: ScoredLabel | None = None
    vocabulary_projection: ScoredLabel | None = None
    vocabulary_scan: ScoredLabel | None = None  # the exact scan beside a descent (or the scan itself)
    frequent_scan: ScoredLabel | None = None  # a descent without the exact scan: the scan of the frequent words
    OMITTED_WHEN_NONE = ("most_frequent_top_activating", "first_listed", "vocabulary_projection", "vocabulary_scan",
                         "frequent_scan")

    def present(self) -> dict[str, ScoredLabel]:
        """{kind: baseline} of the baselines the run has, in the file's order of kinds."""
        return {item.name: getattr(self, item.name) for item in fields(self) if getattr(self, item.name) is not None}


@dataclass
class ExampleCounts(JsonRecord):
    positive: int
    negative: int


@dataclass
class SoftLabelResult(JsonRecord):
    """The soft label's own argmax (of the restart whose argmax did best on validation), scored on held-out examples."""

    restart: int
    argmax: str
    accepted: bool | None
    heldout_auroc: float
    heldout_accuracy: float


@dataclass
class TopToken(JsonRecord):
    token: str
    probability: float
    heldout_auroc: float


@dataclass(kw_only=True)
class Selection(JsonRecord):
    """How the label was chosen: the scan's ten best by objective, or the discrete step's record (its fields)."""

    found_by: str  # vocabulary_scan, or the discrete step's stage
    objective: float
    n_candidates: int
    seconds: float | None
    ranking: list[list]  # the scan: [label, objective]; the discrete step: [label, AUROC, balanced accuracy]
    accuracy: float | None = None
    auroc: float | None = None
    loss: float | None = None
    naturalness: float | None = None
    top_ranked: str | None = None
    tied: list[str] | None = None
    tie_objectives: list[float] | None = None
    tie_aurocs: list[float] | None = None
    examples: ExampleCounts | None = None  # the validation examples the candidates were scored on
    OMITTED_WHEN_NONE = ("accuracy", "auroc", "loss", "naturalness", "top_ranked", "tied", "tie_objectives", "tie_aurocs",
                         "examples")


@dataclass
class ScorerScore(JsonRecord):
    """The label scored by `evaluation.scorer_model`, beside that model's own oracle."""

    model: str
    style: str
    label: str
    heldout_auroc: float | None
    oracle_auroc: float | None


@dataclass
class DelphiMetrics(JsonRecord):
    """One label's detection or fuzzing scores on a latent's test windows, as delphi's `log/result_analysis.py` computes
    them; None where the scorer cannot spell the label."""

    label: str
    balanced_accuracy: float | None
    f1: float | None
    precision: float | None
    recall: float | None
    auroc: float | None


@dataclass
class DelphiScores(JsonRecord):
    """delphi's detection and fuzzing of the label and its baselines: {label kind: metrics, None where the run has no
    such label} per kind."""

    scorer: str
    latent: int
    hookpoint: str
    n_incorrect: int
    windows: dict[str, int]  # test, validation
    detection: dict[str, DelphiMetrics | None]
    fuzz: dict[str, DelphiMetrics | None]

    def of(self, kind: str) -> dict[str, DelphiMetrics | None]:
        return self.detection if kind == "detection" else self.fuzz


@dataclass(kw_only=True)
class FeatureLabel(JsonRecord):
    """A feature that got a label: the label, how it was found, and its held-out score beside the baselines."""

    feature: str
    oracle: OracleSummary | None  # None: no category word (SAE latents)
    method: str  # scan or descent
    label: str
    label_token_ids: list[int]
    accepted: bool | None
    probability: float | None = None  # a descent: the soft label's probability of the label
    soft_label: SoftLabelResult | None = None
    top10: list[TopToken] | None = None
    restart_argmax: list[str] | None = None
    selection: Selection
    objective: float  # on the training and validation examples, what the scan minimises
    heldout_accuracy: float
    heldout_auroc: float
    heldout_examples: ExampleCounts
    top_activating: list[str]
    baselines: Baselines
    example_prompt: str
    one_token: ScoredLabel | None = None  # a two-token scan: the best one-token label beside it
    descent_seconds: float | None = None  # a descent: its share of the training and its discrete step
    oracle_word_alone: OracleSummary | None = None  # context in the prompt: the oracle given the word alone
    word_alone_auroc: float | None = None  # activation records: how well the word alone tells the feature
    scorer: ScorerScore | None = None
    wall_seconds: float | None = None
    delphi: DelphiScores | None = None
    OMITTED_WHEN_NONE = ("probability", "soft_label", "top10", "restart_argmax", "one_token", "descent_seconds",
                         "oracle_word_alone", "word_alone_auroc", "scorer", "delphi")

    @classmethod
    def describes(cls, data: dict) -> bool:
        return data.get("label") is not None


@dataclass(kw_only=True)
class UnlabelledFeature(JsonRecord):
    """A feature the readout cannot tell apart even with its own name: no label, and why."""

    feature: str
    oracle: OracleSummary
    label: None = None
    note: str
    oracle_word_alone: OracleSummary | None = None
    OMITTED_WHEN_NONE = ("oracle_word_alone",)

    @classmethod
    def describes(cls, data: dict) -> bool:
        return data.get("label") is None


FeatureResult = FeatureLabel | UnlabelledFeature


@dataclass
class ModelSummary(JsonRecord):
    name: str
    revision: str
    path: str


@dataclass
class PromptSummary(JsonRecord):
    style: str
    template: str
    answers: list[str] | None
    neutral: str | None


@dataclass
class ScorerSummary(JsonRecord):
    model: str
    path: str
    style: str
    template: str


@dataclass
class DelphiKindSummary(JsonRecord):
    mean_balanced_accuracy: dict[str, float | None]  # per label kind
    mean_auroc: float
    label_above_baseline: dict[str, int]  # per baseline: latents whose label scored above it
    label_above_every_baseline: int


@dataclass
class DelphiSummary(JsonRecord):
    latents: int
    detection: DelphiKindSummary
    fuzz: DelphiKindSummary


@dataclass(kw_only=True)
class LabelResults(JsonRecord):
    model: ModelSummary
    prompt: PromptSummary
    sae: dict[str, Any] | None  # hook_name, architecture, d_sae and the SAE's own settings
    readout: str
    method: str
    scorer: ScorerSummary | None
    delphi: DelphiSummary | None
    oracle_seconds: float | None
    train_seconds: float | None
    steps: int
    features: list[FeatureLabel | UnlabelledFeature]
    trajectory: list[dict[str, Any]]  # the soft labels' training, at most 50 points
    config: dict[str, Any]  # the resolved config, secrets removed
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def read(cls, path: Path) -> "LabelResults":
        """A label.py results.json; one line naming the file and the fix when it is no results file of this version."""
        return cls.from_json(read_json(path, str(path), RERUN), str(path))
