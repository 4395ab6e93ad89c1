"""A feature's entry in results.json: its label scored on held-out examples beside the oracle and the baselines."""

from __future__ import annotations

import time
from collections import Counter

import torch

from gradspace.labeling.baselines import most_frequent_token, vocabulary_projection
from gradspace.labeling.config import LabelingConfig
from gradspace.labeling.discriminator import Discriminator
from gradspace.labeling.features import FeatureData
from gradspace.labeling.methods import FeatureScorers, descent_label, run_scan
from gradspace.labeling.oracle import OracleResult, is_accepted
from gradspace.labeling.oracle_gate import Oracles, oracle_summary
from gradspace.labeling.plan import LabelPlan
from gradspace.labeling.results import Baselines, ExampleCounts, FeatureLabel, ScoredLabel, ScorerScore, Selection
from gradspace.labeling.scan import ScanResult, vocabulary_scan
from gradspace.labeling.scorer import SecondModelScorer
from gradspace.labeling.vocabulary import token_text


def baseline_labels(feature: FeatureData, allowed: torch.Tensor, unembedding: torch.Tensor) -> tuple[dict, list[int]]:
    """The labels found without optimisation ({kind: token ids}), and the vocabulary projection's top 10."""
    labels, projection = {}, []
    frequent = most_frequent_token(feature.top_activating_tokens, allowed)
    if frequent is not None:
        labels["most_frequent_top_activating"] = (frequent,)
    if feature.first_listed_token is not None and bool(allowed[feature.first_listed_token]):
        labels["first_listed"] = (feature.first_listed_token,)
    if feature.decoder_direction is not None:
        projection = vocabulary_projection(unembedding, feature.decoder_direction, allowed, top=10)
        labels["vocabulary_projection"] = (projection[0],)
    return labels, projection

def label_feature(config: LabelingConfig, feature: FeatureData, found: tuple[tuple[int, ...], float, dict],
                  scan: ScanResult | None, single: ScanResult | None, method: str, scorers: FeatureScorers,
                  one_token: FeatureScorers | None, allowed: torch.Tensor, unembedding: torch.Tensor,
                  oracle: OracleResult | None) -> FeatureLabel:
    """One feature's result: the found label (`found`: label ids, validation threshold, the method's own record), the
    scan beside it, and the baselines, all scored on the held-out examples at the validation examples' boundary."""
    builder = scorers.training.discriminator.builder
    tokenizer = builder.tokenizer
    label_ids, threshold, record = found
    best = scorers.heldout.score_labels([label_ids], [threshold])[0]

    def scored(ids: tuple[int, ...], by: FeatureScorers, **extra) -> ScoredLabel:
        score = best if ids == label_ids else by.heldout_score(ids)
        return scored_label(ids, score, feature, tokenizer, **extra)

    baselines_ids, projection = baseline_labels(feature, allowed, unembedding)
    baselines = Baselines()
    for kind, ids in baselines_ids.items():
        top10 = [token_text(tokenizer, [t]) for t in projection] if kind == "vocabulary_projection" else None
        setattr(baselines, kind, scored(ids, scorers, top10=top10) if len(ids) == config.label.length else
                ScoredLabel(label=token_text(tokenizer, ids), token_ids=list(ids), accepted=None, heldout_accuracy=None,
                            heldout_auroc=None, top10=top10))
    if scan is not None:
        baselines.vocabulary_scan = scored(scan.label_ids, scorers, objective=scan.objective, n_scored=scan.n_scored,
                                           seconds=round(scan.seconds, 3))
    label = token_text(tokenizer, label_ids)
    return FeatureLabel(
        feature=feature.name,
        oracle=oracle_summary(oracle),
        method=method,
        label=label,
        label_token_ids=list(label_ids),
        accepted=is_accepted(label, feature),
        **record,
        # the objective on the training and validation words, what the scan minimises: a descent's label above the
        # scan's objective is an optimisation shortfall, not the objective's preference
        objective=scorers.training.score_labels([label_ids])[0].objective,
        heldout_accuracy=best.balanced_accuracy,
        heldout_auroc=best.auroc,
        heldout_examples=ExampleCounts(int(scorers.heldout.targets.sum()), int((1 - scorers.heldout.targets).sum())),
        top_activating=[token_text(tokenizer, [t]) for t in feature.top_activating_tokens[:10]],
        baselines=baselines,
        example_prompt=builder.render_text(feature.heldout_positive[0], label_ids),
        # a two-token scan: the best one-token label beside it
        one_token=None if single is None else scored(single.label_ids, one_token),
    )

def scored_label(ids: tuple[int, ...], score, feature: FeatureData, tokenizer, **extra) -> ScoredLabel:
    """A label's held-out score (`score`, a LabelScore) with the label's text; `extra`: the fields of a scan's label."""
    text = token_text(tokenizer, ids)
    return ScoredLabel(label=text, token_ids=list(ids), accepted=is_accepted(text, feature),
                       heldout_accuracy=score.balanced_accuracy, heldout_auroc=score.auroc, **extra)

def frequent_scan_baseline(scan: ScanResult, scorers: FeatureScorers, feature: FeatureData, tokenizer, n_words: int
                           ) -> ScoredLabel:
    """The frequent-word scan's label scored on the held-out examples, as the descent's label is."""
    return scored_label(scan.label_ids, scorers.heldout_score(scan.label_ids), feature, tokenizer, objective=scan.objective,
                        n_words=n_words, seconds=round(scan.seconds, 3))

def scan_record(scan: ScanResult, tokenizer) -> dict:
    """What the scan's selection saw: its ten best labels by objective."""
    return {"selection": Selection(found_by="vocabulary_scan", objective=scan.objective, n_candidates=scan.n_scored,
                                   seconds=round(scan.seconds, 3),
                                   ranking=[[token_text(tokenizer, ids), round(objective, 4)] for ids, objective in scan.ranking[:10]])}

def label_one(config: LabelingConfig, plan: LabelPlan, index: int, feature: FeatureData, n_trainable: int,
              discriminator: Discriminator, allowed: torch.Tensor, unembedding: torch.Tensor, oracles: Oracles,
              scorer: SecondModelScorer | None) -> FeatureLabel:
    """One trainable feature's result: its label by the plan's method, scored beside the baselines."""
    tokenizer = discriminator.builder.tokenizer
    feature_start = time.perf_counter()
    scorers = FeatureScorers.build(config, feature, discriminator, allowed)
    one_token_scorers = None if plan.one_token is None else FeatureScorers.build(config, feature, plan.one_token, allowed)
    scan, single = run_scan(config, scorers, one_token_scorers) if plan.scans else (None, None)
    if plan.descends:
        rows = slice(index * config.label.restarts, (index + 1) * config.label.restarts)
        with torch.no_grad():
            p_final = plan.module.distribution()[rows].detach()
        visited = [label for label, _ in sum(plan.module.visited[rows], Counter()).most_common()]
        found = descent_label(config, feature, p_final, visited, scorers)
        descent_seconds = plan.train_seconds / n_trainable + found[2]["selection"].seconds
    else:
        found = (scan.label_ids, scorers.validation.score_labels([scan.label_ids])[0].threshold, scan_record(scan, tokenizer))
    entry = label_feature(config, feature, found, scan, single, "descent" if plan.descends else "scan", scorers,
                          one_token_scorers, allowed, unembedding, oracles.checks[feature.name])
    if plan.descends:  # its share of the soft labels' training and its discrete step's search
        entry.descent_seconds = round(descent_seconds, 3)
    if plan.frequent is not None:
        entry.baselines.frequent_scan = frequent_scan_baseline(vocabulary_scan(scorers.training, tokens=plan.frequent),
                                                               scorers, feature, tokenizer, len(plan.frequent))
    entry.oracle_word_alone = oracles.word_alone_summary(feature.name)
    entry.word_alone_auroc = feature.word_alone_auroc
    if scorer is not None:
        entry.scorer = ScorerScore(**scorer.score(feature, entry.label, tokenizer))
    # The K features train in one batch: each gets an equal share of the training time.
    entry.wall_seconds = plan.train_seconds / n_trainable + time.perf_counter() - feature_start
    return entry
