"""The settings `label.py` reads, one dataclass per config section: label (the soft label), discrete (the discrete
step), evaluation, feature (one class per feature kind), prompt and sae (one class per source).

The shipped YAML is the only source of defaults: no field here has one, so a key missing from a section fails at
once, and a key no field knows (a misspelling) is refused with its name (`config_from_section`). The built-in SAE's
settings keep their defaults for the library callers of `ensure_builtin_sae`; a unit test holds them equal to
`conf/sae/builtin.yaml`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from gradspace.errors import GradspaceError
from gradspace.labeling.sae_training import BuiltinSAEConfig
from gradspace.utils.io import check_output_dir
from gradspace.utils.run_config import config_from_section, plain_section
from gradspace.utils.seeding import check_seed

VOCABULARIES = ("words", "all")
# How a label is found: the exact scan of every allowed token (scan), the soft label's descent (descent), the descent
# with the scan beside it as a baseline (both), or the scan where the readout only predicts the label, else the descent (auto).
METHODS = ("auto", "scan", "descent", "both")
# What the frozen LM's output says about (example, label): see gradspace.labeling.discriminator.
READOUTS = ("answer", "example_likelihood", "label_likelihood")


@dataclass
class SoftLabelConfig:
    """The `label` section: the soft label and its optimisation."""

    steps: int  # optimisation steps; the trainer's max_steps follows them (label.yaml)
    length: int  # tokens per label
    restarts: int  # soft labels per feature, trained side by side; they differ by their random initial logits
    batch_size: int  # examples per feature and step, half positive and half negative
    init_scale: float  # std of the random initial logits v
    temperature_start: float
    temperature_end: float  # geometric annealing over the run
    # Fraction of the run after which the forward sees the argmax token (straight-through); 1.0 = never.
    # Soft mixtures explore early; the hard forward at the end makes the label work as the token it will be.
    straight_through_from: float
    entropy_weight: float
    kl_weight: float
    vocabulary: str  # words: whole-word tokens only; all: every non-special token
    min_letters: int  # words: tokens with at least this many letters (shorter ones are mostly fragments)
    stop_words: bool  # words: also function and stop words ("the", "which", "about")
    optimizer: dict  # a `_target_` node with `_partial_: true`, called with the soft label's parameters
    method: str  # one of METHODS
    scan_beam: int  # two-token scans: the one-token scan's best first tokens each given every second token
    # Restarts seeded from the LM's own prediction (gradspace.labeling.seeding): a prompt ending where the category is
    # named, `{words}` filled by `seed_words` training words; null = random starts only
    seed_prompt: str | None
    seed_words: int
    seed_logit: float  # added to the seeded token's initial logit

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise GradspaceError(f"label.method='{self.method}' is unknown; use one of {', '.join(METHODS)}")
        if self.scan_beam < 1:
            raise GradspaceError(f"label.scan_beam={self.scan_beam} must be at least 1")
        if self.vocabulary not in VOCABULARIES:
            raise GradspaceError(f"label.vocabulary='{self.vocabulary}' is unknown; use one of {', '.join(VOCABULARIES)}")
        if self.restarts < 1 or self.batch_size < 2 or self.length < 1:
            raise GradspaceError("label.restarts, label.length must be >= 1 and label.batch_size >= 2; fix the label config")
        if self.temperature_start <= 0 or self.temperature_end <= 0:
            raise GradspaceError("label.temperature_start and temperature_end must be positive")
        if self.steps <= 0:
            raise GradspaceError(f"label.steps={self.steps} must be positive (the example stream is endless)")
        if self.seed_prompt is not None and ("{words}" not in self.seed_prompt or self.seed_words < 1):
            raise GradspaceError(f"label.seed_prompt={self.seed_prompt!r} needs a {{words}} slot and label.seed_words >= 1 "
                                 f"(or label.seed_prompt=null for random starts)")


TIE_BREAKS = ("soft_label", "objective")
# What orders the tied candidates: the lowest objective, or the highest AUROC (then the lowest objective).
# The words the tie-break's objective is measured on: every word the selection may see, or the validation words alone.
TIE_OBJECTIVE_WORDS = ("train_and_validation", "validation")


@dataclass(frozen=True)
class DiscreteConfig:
    """The `discrete` section: which candidates the discrete step scores as hard tokens."""

    top: int  # candidates per restart (and position) from the soft label
    sweeps: int  # coordinate-ascent sweeps for multi-token labels
    prior_top: int  # candidates from the LM's own prediction at the label slot; 0 = none
    swap_rounds: int  # rounds of gradient-guided swaps; 0 = none
    swap_top: int  # swaps per label position a round scores exactly
    swap_beam: int  # labels each round starts from
    max_examples: int  # per class: validation examples the candidates are scored on
    max_candidates: int  # labels the discrete step scores at most, per feature
    tie_share: float  # a candidate ties with the best when it scores at least the best's AUROC in this share of resamples
    resamples: int  # bootstrap resamples of the validation examples for tie_share
    tie_break: str  # among tied candidates: "soft_label" (the soft labels' own first) or "objective" (the lowest)
    tie_objective_words: str  # where the tie-break's objective is measured: "train_and_validation" or "validation"

    def __post_init__(self) -> None:
        if not 0.0 < self.tie_share <= 1.0:
            raise GradspaceError(f"discrete.tie_share={self.tie_share} must be in (0, 1]; 1.0 keeps the strict ranking")
        if self.tie_break not in TIE_BREAKS:
            raise GradspaceError(f"discrete.tie_break='{self.tie_break}' is unknown; use one of {', '.join(TIE_BREAKS)}")
        if self.tie_objective_words not in TIE_OBJECTIVE_WORDS:
            raise GradspaceError(f"discrete.tie_objective_words='{self.tie_objective_words}' is unknown; "
                                 f"use one of {', '.join(TIE_OBJECTIVE_WORDS)}")
        if self.resamples < 1:
            raise GradspaceError(f"discrete.resamples={self.resamples} must be at least 1")


@dataclass(frozen=True)
class EvaluationConfig:
    max_examples: int  # per class: held-out examples the hard label and the baselines are scored on
    min_oracle_auroc: float  # below it, the readout cannot tell the feature apart even with its own name: no label
    # A readout that reads the label is scanned one forward per (token, example): the vocabulary_scan baseline (and
    # label.method=auto's scan) is run where allowed tokens × examples stays within this
    scan_max_items: int
    # Where that scan is not run and a descent is: the baseline scan of the same readout over this many allowed words
    # most frequent in English (baselines.frequent_scan); 0 = none
    frequent_scan_words: int
    scorer_model: dict | None  # a model config (as under model/): every label is also scored by that model's readout

    def __post_init__(self) -> None:
        if not is_whole_number(self.frequent_scan_words, 0):
            raise GradspaceError(f"evaluation.frequent_scan_words={self.frequent_scan_words!r} must be a whole number >= 0 "
                                 f"(0 = no frequent-word scan)")


def is_whole_number(value, minimum: int) -> bool:
    """An int (not a bool, which is one in Python) of at least `minimum`."""
    return not isinstance(value, bool) and isinstance(value, int) and value >= minimum


def check_threshold(threshold: float) -> None:
    # Activations are compared with it: at NaN no example is active or inactive, and the error blamed the feature.
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise GradspaceError(f"feature.threshold={threshold!r} is not a finite number; set feature.threshold=<activation "
                             f"above which a feature is active>")


@dataclass(frozen=True)
class FeatureConfig:
    """What every feature kind has: which features, how their examples split, and the corpus to count words in."""

    kind: str
    ids: list
    heldout_fraction: float
    validation_fraction: float  # of what is not held out: the discrete step ranks candidate labels on it
    split_seed: int
    corpus_path: str | None  # a text file, one text per line; None = the synthetic world's corpora (synthetic models)
    max_texts: int

    def __post_init__(self) -> None:
        # The corpus is cut with [:max_texts]: -1 would silently drop its last text rather than mean "all".
        if not is_whole_number(self.max_texts, 0):
            raise GradspaceError(f"feature.max_texts={self.max_texts!r} is not a whole number >= 0; set "
                                 f"feature.max_texts=<texts of the corpus to read>")


@dataclass(frozen=True)
class CategoryFeatureConfig(FeatureConfig):
    """`kind: category`: categories of the synthetic world."""


@dataclass(frozen=True)
class WordsFeatureConfig(FeatureConfig):
    """`kind: words`: a word list per feature name."""

    sets: dict
    # Per feature: the category word first (the oracle's label), then the synonyms and hypernyms a label may be
    labels: dict
    negatives: list | None  # None = every whole-word token not in the set


@dataclass(frozen=True)
class SAEFeatureConfig(FeatureConfig):
    """`kind: sae`: SAE latents, active where their activation exceeds `threshold`."""

    threshold: float
    max_examples: int  # per class and split
    top_n: int  # strongest occurrences behind the most-frequent-token baseline
    select_count: int  # > 0, with ids: []: this many latents picked by the rule of `features.select_latents`
    select_density: list  # [low, high]: the share of training tokens a picked latent fires on
    select_word_share: float  # at least this share of its firings on whole-word tokens
    select_min_words: int  # and on at least this many distinct words

    def __post_init__(self) -> None:
        super().__post_init__()
        check_threshold(self.threshold)
        if self.select_count < 0:
            raise GradspaceError(f"feature.select_count={self.select_count} must be 0 (use feature.ids) or positive")
        if self.select_count and self.ids:
            raise GradspaceError(f"feature.select_count={self.select_count} picks the latents itself; set feature.ids=[] "
                                 f"(or select_count=0 to label ids {list(self.ids)})")
        if len(self.select_density) != 2 or not 0 <= self.select_density[0] < self.select_density[1] <= 1:
            raise GradspaceError(f"feature.select_density={list(self.select_density)} must be [low, high] with 0 <= low < high <= 1")


@dataclass(frozen=True)
class RecordsFeatureConfig(FeatureConfig):
    """`kind: records`: activation records in a jsonl file (gradspace.labeling.records), active above `threshold`."""

    path: str
    threshold: float
    labels: dict  # per feature: the category word first, then the synonyms and hypernyms a label may be
    top_n: int  # strongest records behind the most-frequent-token baseline
    max_context_tokens: int  # the context's last tokens the prompt keeps (a long text would fill memory)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_threshold(self.threshold)
        if self.max_context_tokens < 0:
            raise GradspaceError(f"feature.max_context_tokens={self.max_context_tokens} must be 0 or more")
        if not self.path or self.path == "???":
            raise GradspaceError("feature=records needs feature.path=<file.jsonl> of activation records")


FIT_ON = ("windows", "tokens")


@dataclass(frozen=True)
class DelphiFeatureConfig(FeatureConfig):
    """`kind: delphi`: latents of a delphi latent cache (gradspace.labeling.delphi_cache), with delphi's sampling."""

    path: str
    hookpoint: str | None  # None: the cache's only hookpoint
    example_ctx_len: int  # tokens per window (delphi's ConstructorConfig.example_ctx_len)
    n_quantiles: int  # activating windows are drawn evenly from this many activation quantiles (SamplerConfig.n_quantiles)
    n_train: int  # activating windows per latent the label is fitted on (and as many non-activating)
    n_validation: int  # ... on which the label's decision boundary is set
    n_test: int  # ... on which it is scored (delphi's n_examples_test and n_non_activating)
    fit_on: str  # windows: the label is fitted on whole windows as detection reads them; tokens: on the strongest token
    top_n: int
    select_count: int
    select_density: list
    select_max_top_share: float  # the rule of delphi_cache.WindowRule
    select_max_common_share: float
    select_common_tokens: int
    select_min_word_share: float

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.path or self.path == "???":
            raise GradspaceError("feature=delphi needs feature.path=<delphi latent cache folder>")
        for name in ("example_ctx_len", "n_quantiles", "n_train", "n_validation", "n_test"):
            value = getattr(self, name)
            if not is_whole_number(value, 1):
                raise GradspaceError(f"feature.{name}={value!r} must be a whole number >= 1")
        if self.select_count < 0 or (self.select_count and self.ids):
            raise GradspaceError(f"feature.select_count={self.select_count} needs feature.ids=[] (and 0 labels feature.ids)")
        if not self.select_count and not self.ids:
            raise GradspaceError("feature=delphi needs feature.ids=[<latent>, ...] or feature.select_count=<n>")
        if self.fit_on not in FIT_ON:
            raise GradspaceError(f"feature.fit_on={self.fit_on!r} is unknown; use one of {', '.join(FIT_ON)}")
        for name in ("select_max_top_share", "select_max_common_share", "select_min_word_share"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise GradspaceError(f"feature.{name}={value!r} must be a share between 0 and 1")
        if not is_whole_number(self.select_common_tokens, 0):
            raise GradspaceError(f"feature.select_common_tokens={self.select_common_tokens!r} must be a whole number >= 0")


FEATURE_KINDS = {"words": WordsFeatureConfig, "category": CategoryFeatureConfig, "sae": SAEFeatureConfig,
                 "records": RecordsFeatureConfig, "delphi": DelphiFeatureConfig}


@dataclass(frozen=True)
class PromptFamily:
    template: str
    readout: str  # one of READOUTS
    answers: list | None  # answer readout: [positive, negative], each one token
    neutral: str | None  # example_likelihood: the label-free template the word's likelihood is compared with
    system: str | None  # chat only: the system turn

    def __post_init__(self) -> None:
        if self.readout not in READOUTS:
            raise GradspaceError(f"prompt readout '{self.readout}' is unknown; use one of {', '.join(READOUTS)}")


@dataclass(frozen=True)
class PromptConfig:
    style: str  # auto, or the name of a family
    style_by_model: dict  # style=auto: model name -> family, chosen by the oracle check
    add_bos: bool  # start with the model's document-start token (chat templates bring their own)
    families: dict[str, PromptFamily]

    def __post_init__(self) -> None:
        known = ("auto", *self.families)
        for style in (self.style, *self.style_by_model.values()):
            if style not in known:
                raise GradspaceError(f"prompt style '{style}' is unknown; use one of {', '.join(known)}")


@dataclass(frozen=True)
class LocalSAEConfig:
    path: str  # a directory in SAELens format


@dataclass(frozen=True)
class SAELensConfig:
    release: str
    id: str


SAE_SOURCES = {"builtin": BuiltinSAEConfig, "local": LocalSAEConfig, "saelens": SAELensConfig}


def feature_config(section: Any) -> FeatureConfig:
    values = plain_section(section)
    kind = values.get("kind")
    if kind not in FEATURE_KINDS:
        raise GradspaceError(f"feature.kind='{kind}' is unknown; use one of {', '.join(FEATURE_KINDS)}")
    config = config_from_section(FEATURE_KINDS[kind], values, "feature")
    if not config.ids and not getattr(config, "select_count", 0) and kind not in ("records", "delphi"):
        raise GradspaceError("feature.ids is empty; name at least one feature, e.g. feature.ids=[mammal]")
    return config


def prompt_config(section: Any) -> PromptConfig:
    values = plain_section(section)
    families = {name: config_from_section(PromptFamily, family, f"prompt.families.{name}")
                for name, family in (values.pop("families", None) or {}).items()}
    return config_from_section(PromptConfig, {**values, "families": families}, "prompt")


def sae_config(section: Any) -> BuiltinSAEConfig | LocalSAEConfig | SAELensConfig | None:
    """The `sae` section without its `source` key, as the source's dataclass; None for `sae: null`."""
    if not section:
        return None
    values = plain_section(section)
    source = values.pop("source", None)
    if source not in SAE_SOURCES:
        raise GradspaceError(f"sae.source='{source}' is unknown; use one of {', '.join(SAE_SOURCES)}")
    return config_from_section(SAE_SOURCES[source], values, "sae")


@dataclass(frozen=True)
class DelphiConfig:
    """The `delphi` section: delphi's files out (explanations, a latent cache) and its detection and fuzzing scores."""

    explanations: bool  # write delphi/explanations/<hookpoint>_latent<i>.txt for SAE latents and delphi caches
    score: bool  # detection and fuzzing of every label and baseline by evaluation.scorer_model (feature=delphi)
    fuzz_threshold: float  # an activating window's marked tokens reach this share of its largest activation
    write_cache: str | None  # feature=sae: the SAE's codes over the corpus written here as a delphi latent cache
    cache_ctx_len: int  # its rows of tokens
    n_splits: int  # its files per hookpoint

    def __post_init__(self) -> None:
        if self.cache_ctx_len < 1 or self.n_splits < 1:
            raise GradspaceError("delphi.cache_ctx_len and delphi.n_splits must be at least 1")


@dataclass(frozen=True)
class LabelingConfig:
    """Every labeling section of a `label.py` config, checked before any model is loaded."""

    label: SoftLabelConfig
    discrete: DiscreteConfig
    evaluation: EvaluationConfig
    feature: FeatureConfig
    prompt: PromptConfig
    sae: BuiltinSAEConfig | LocalSAEConfig | SAELensConfig | None
    delphi: DelphiConfig | None = None

    @classmethod
    def from_config(cls, cfg: Mapping) -> "LabelingConfig":
        # Settings outside the labeling sections that would fail only after the model loads. The output directory
        # is Hydra's run directory, which a config composed outside a Hydra app does not have.
        check_seed(cfg.get("seed"))
        output_dir = OmegaConf.select(OmegaConf.create(cfg) if not isinstance(cfg, DictConfig) else cfg, "paths.output_dir",
                                      throw_on_resolution_failure=False)
        if output_dir is not None:
            check_output_dir(output_dir)
        return cls(
            label=config_from_section(SoftLabelConfig, cfg["label"], "label"),
            discrete=config_from_section(DiscreteConfig, cfg["discrete"], "discrete"),
            evaluation=config_from_section(EvaluationConfig, cfg["evaluation"], "evaluation"),
            feature=feature_config(cfg["feature"]),
            prompt=prompt_config(cfg["prompt"]),
            sae=sae_config(cfg.get("sae")),
            delphi=delphi_config(cfg.get("delphi"), cfg),
        )

    def __post_init__(self) -> None:
        if isinstance(self.feature, DelphiFeatureConfig) and self.feature.fit_on == "windows" and (
                self.label.method not in ("scan", "auto") or self.label.length != 1):
            raise GradspaceError(f"feature.fit_on=windows scans one-token labels over whole windows (label.method="
                                 f"{self.label.method}, label.length={self.label.length}): use label.method=scan label.length=1, "
                                 f"or feature.fit_on=tokens")


def delphi_config(section: Any, cfg: Mapping) -> DelphiConfig | None:
    if not section:
        return None
    config = config_from_section(DelphiConfig, section, "delphi")
    if config.score and not cfg["feature"].get("kind") == "delphi":
        raise GradspaceError("delphi.score=true scores delphi's windows: use feature=delphi (a delphi cache; "
                             "delphi.write_cache=<dir> writes one from an SAE)")
    if config.score and not (cfg.get("evaluation") or {}).get("scorer_model"):
        raise GradspaceError("delphi.score=true needs a scorer that is not the optimiser: add model@evaluation.scorer_model=<model>")
    return config
