"""The run's first stage: every feature's oracle check, which lets through only the features the readout can tell
apart with their own category word; the others get no label, and their result says why."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import torch

from gradspace.labeling.config import LabelingConfig
from gradspace.labeling.discriminator import Discriminator
from gradspace.labeling.features import FeatureData
from gradspace.labeling.oracle import OracleResult, oracle_check
from gradspace.labeling.results import OracleSummary, UnlabelledFeature
from gradspace.labeling.setup import without_context

log = logging.getLogger(__name__)


@dataclass
class Oracles:
    """Per feature, its oracle check and, with context in the prompt, the same check on the word alone."""

    checks: dict[str, OracleResult | None]
    word_alone: dict[str, OracleResult | None]
    seconds: float

    def word_alone_summary(self, name: str) -> OracleSummary | None:
        return oracle_summary(self.word_alone.get(name))


def check_oracles(config: LabelingConfig, discriminator: Discriminator, allowed: torch.Tensor,
                  features: list[FeatureData]) -> Oracles:
    start = time.perf_counter()
    max_examples = config.evaluation.max_examples
    checks = {f.name: oracle_check(discriminator, f, allowed, max_examples) for f in features}
    # With context in the prompt: the same readout given the word alone, what the context adds.
    word_alone = ({f.name: oracle_check(discriminator, without_context(f), allowed, max_examples) for f in features}
                  if discriminator.builder.uses_context else {})
    return Oracles(checks, word_alone, time.perf_counter() - start)


def gate(config: LabelingConfig, oracles: Oracles, features: list[FeatureData]
         ) -> tuple[list[FeatureData], dict[str, UnlabelledFeature]]:
    """(the features to label: no oracle, or one at least evaluation.min_oracle_auroc; the others' results)."""
    minimum = config.evaluation.min_oracle_auroc
    trainable = [f for f in features if oracles.checks[f.name] is None or oracles.checks[f.name].score.auroc >= minimum]
    unlabelled = {f.name: unlabelled_feature(f, oracles.checks[f.name], minimum) for f in features if f not in trainable}
    for name, result in unlabelled.items():
        result.oracle_word_alone = oracles.word_alone_summary(name)
        log.warning("%s: %s", result.feature, result.note)
    return trainable, unlabelled


def oracle_summary(oracle: OracleResult | None) -> OracleSummary | None:
    if oracle is None:
        return None
    return OracleSummary(oracle.label, oracle.score.auroc, oracle.score.balanced_accuracy)


def unlabelled_feature(feature: FeatureData, oracle: OracleResult, min_auroc: float) -> UnlabelledFeature:
    """The result of a feature the readout cannot tell apart even with its own name: no label, and why."""
    return UnlabelledFeature(
        feature=feature.name, oracle=oracle_summary(oracle),
        note=f"oracle AUROC {oracle.score.auroc:.3f} < evaluation.min_oracle_auroc={min_auroc}: with its category word "
             f"'{oracle.label}' as the label this readout is near chance on the feature, so a found label would mean nothing; "
             f"try another prompt.style")
