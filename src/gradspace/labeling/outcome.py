"""A feature's entry in results.json: its label scored on held-out examples beside the oracle and the baselines."""

from __future__ import annotations

import logging

import torch

from gradspace.labeling.baselines import most_frequent_token, vocabulary_projection
from gradspace.labeling.config import LabelingConfig
from gradspace.labeling.features import FeatureData
from gradspace.labeling.methods import FeatureScorers
from gradspace.labeling.oracle import OracleResult, is_accepted
from gradspace.labeling.scan import ScanResult
from gradspace.labeling.vocabulary import token_text

log = logging.getLogger(__name__)
BASELINE_KINDS = ("most_frequent_top_activating", "first_listed", "vocabulary_projection", "vocabulary_scan")


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
                  oracle: OracleResult | None) -> dict:
    """One feature's result: the found label (`found`: label ids, validation threshold, the method's own record), the
    scan beside it, and the baselines, all scored on the held-out examples at the validation examples' boundary."""
    builder = scorers.training.discriminator.builder
    tokenizer = builder.tokenizer
    label_ids, threshold, record = found
    best = scorers.heldout.score_labels([label_ids], [threshold])[0]

    def scored(ids: tuple[int, ...], by: FeatureScorers) -> dict:
        score = best if ids == label_ids else by.heldout_score(ids)
        text = token_text(tokenizer, ids)
        return {"label": text, "token_ids": list(ids), "accepted": is_accepted(text, feature),
                "heldout_accuracy": score.balanced_accuracy, "heldout_auroc": score.auroc}

    baselines_ids, projection = baseline_labels(feature, allowed, unembedding)
    baselines = {}
    for kind, ids in baselines_ids.items():
        if len(ids) == config.label.length:
            baselines[kind] = scored(ids, scorers)
        else:
            baselines[kind] = {"label": token_text(tokenizer, ids), "token_ids": list(ids), "accepted": None,
                               "heldout_accuracy": None, "heldout_auroc": None}
        if kind == "vocabulary_projection":
            baselines[kind]["top10"] = [token_text(tokenizer, [t]) for t in projection]
    if scan is not None:
        baselines["vocabulary_scan"] = {**scored(scan.label_ids, scorers), "objective": scan.objective,
                                        "n_scored": scan.n_scored, "seconds": round(scan.seconds, 3)}
    label = token_text(tokenizer, label_ids)
    entry = {
        "feature": feature.name,
        "oracle": oracle_summary(oracle),
        "method": method,
        "label": label,
        "label_token_ids": list(label_ids),
        "accepted": is_accepted(label, feature),
        **record,
        # the objective on the training and validation words, what the scan minimises: a descent's label above the
        # scan's objective is an optimisation shortfall, not the objective's preference
        "objective": scorers.training.score_labels([label_ids])[0].objective,
        "heldout_accuracy": best.balanced_accuracy,
        "heldout_auroc": best.auroc,
        "heldout_examples": {"positive": int(scorers.heldout.targets.sum()), "negative": int((1 - scorers.heldout.targets).sum())},
        "top_activating": [token_text(tokenizer, [t]) for t in feature.top_activating_tokens[:10]],
        "baselines": baselines,
        "example_prompt": builder.render_text(feature.heldout_positive[0], label_ids),
    }
    if single is not None:  # a two-token scan: the best one-token label beside it
        entry["one_token"] = scored(single.label_ids, one_token)
    return entry

def frequent_scan_baseline(scan: ScanResult, scorers: FeatureScorers, feature: FeatureData, tokenizer, n_words: int) -> dict:
    """The frequent-word scan's label scored on the held-out examples, as the descent's label is."""
    score = scorers.heldout_score(scan.label_ids)
    label = token_text(tokenizer, scan.label_ids)
    return {"label": label, "token_ids": list(scan.label_ids), "accepted": is_accepted(label, feature),
            "heldout_accuracy": score.balanced_accuracy, "heldout_auroc": score.auroc, "objective": scan.objective,
            "n_words": n_words, "seconds": round(scan.seconds, 3)}

def scan_record(scan: ScanResult, tokenizer) -> dict:
    """What the scan's selection saw: its ten best labels by objective."""
    return {"selection": {"found_by": "vocabulary_scan", "objective": scan.objective, "n_candidates": scan.n_scored,
                          "seconds": round(scan.seconds, 3),
                          "ranking": [[token_text(tokenizer, ids), round(objective, 4)] for ids, objective in scan.ranking[:10]]}}

def oracle_summary(oracle: OracleResult | None) -> dict | None:
    if oracle is None:
        return None
    return {"label": oracle.label, "heldout_auroc": oracle.score.auroc, "heldout_accuracy": oracle.score.balanced_accuracy}

def unlabelled_feature(feature: FeatureData, oracle: OracleResult, min_auroc: float) -> dict:
    """The result of a feature the readout cannot tell apart even with its own name: no label, and why."""
    return {"feature": feature.name, "oracle": oracle_summary(oracle), "label": None,
            "note": f"oracle AUROC {oracle.score.auroc:.3f} < evaluation.min_oracle_auroc={min_auroc}: with its category word "
                    f"'{oracle.label}' as the label this readout is near chance on the feature, so a found label would mean nothing; "
                    f"try another prompt.style"}
