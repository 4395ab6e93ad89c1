"""What a run shows: a log line per feature, the W&B table, and delphi's explanation and score files."""

from __future__ import annotations

import logging
from pathlib import Path

from gradspace.labeling.config import LabelingConfig
from gradspace.labeling.features import FeatureData
from gradspace.labeling.outcome import BASELINE_KINDS
from gradspace.utils.wandb_setup import wandb_logger_of

log = logging.getLogger(__name__)


def log_feature(feature: FeatureData, entry: dict) -> None:
    # Without a category word (SAE latents) what the feature fires on is what its label is to be read against.
    soft = entry.get("soft_label")
    log.info("%s: %s | label %r (%s, accepted %s) held-out accuracy %.3f AUROC %.3f%s | baseline %s%s", feature.name,
             f"fires most on {', '.join(dict.fromkeys(entry['top_activating']))!r}" if entry["oracle"] is None
             else f"oracle AUROC {entry['oracle']['heldout_auroc']:.3f} ({entry['oracle']['label']!r})",
             entry["label"], entry["selection"]["found_by"], entry["accepted"], entry["heldout_accuracy"], entry["heldout_auroc"],
             "" if soft is None else f" | soft-label argmax {soft['argmax']!r} held-out AUROC {soft['heldout_auroc']:.3f}",
             {k: (b["label"], None if b["heldout_auroc"] is None else round(b["heldout_auroc"], 3)) for k, b in entry["baselines"].items()},
             "" if not entry.get("scorer") else f" | scored by {entry['scorer']['model']}: AUROC {entry['scorer']['heldout_auroc']:.3f}")

def log_results(loggers: list, results: list[dict]) -> None:
    """The held-out metrics as scalars into every tracker, and the labels as a W&B table."""
    from gradspace.utils.wandb_setup import finish_wandb

    labelled = [r for r in results if r["label"] is not None]
    rounded = lambda value: None if value is None else round(value, 4)  # noqa: E731
    table = [[r["feature"], rounded(r["oracle"] and r["oracle"]["heldout_auroc"]), r["method"], r["label"],
              rounded(r.get("probability")), round(r["heldout_accuracy"], 4), round(r["heldout_auroc"], 4),
              r["soft_label"]["argmax"] if "soft_label" in r else None,
              rounded(r["soft_label"]["heldout_auroc"]) if "soft_label" in r else None,
              " ".join(t["token"] for t in r["top10"]) if "top10" in r else None,
              *[r["baselines"].get(k, {}).get("label") for k in BASELINE_KINDS],
              rounded(r["baselines"].get("vocabulary_scan", {}).get("heldout_auroc")),
              r["scorer"]["model"] if r.get("scorer") else None, rounded(r["scorer"]["heldout_auroc"]) if r.get("scorer") else None]
             for r in labelled]
    metrics = ({f"heldout/accuracy/{r['feature']}": r["heldout_accuracy"] for r in labelled}
               | {f"heldout/auroc/{r['feature']}": r["heldout_auroc"] for r in labelled}
               | {f"scorer/auroc/{r['feature']}": r["scorer"]["heldout_auroc"] for r in labelled if r.get("scorer")}
               | {f"oracle/auroc/{r['feature']}": r["oracle"]["heldout_auroc"] for r in results if r["oracle"]})
    for logger in loggers:
        logger.log_metrics(metrics)
        logger.save()
    wandb_logger = wandb_logger_of(loggers)
    if wandb_logger is None:
        return
    wandb_logger.log_table(key="labels", columns=["feature", "oracle_auroc", "method", "label", "probability", "heldout_accuracy",
                                                  "heldout_auroc", "soft_argmax", "soft_argmax_auroc", "top10", "baseline_frequent",
                                                  "baseline_first_listed", "baseline_projection", "baseline_vocabulary_scan",
                                                  "baseline_vocabulary_scan_auroc", "scorer_model", "scorer_auroc"],
                           data=table)
    if any(r.get("delphi") for r in results):
        from gradspace.labeling.delphi_scoring import table as delphi_table

        columns, rows = delphi_table(results)
        wandb_logger.log_table(key="delphi", columns=columns, data=rows)
    finish_wandb()

def finish_delphi(config: LabelingConfig, features: list[FeatureData], results: list[dict], scorer, sae, tokenizer, seed: int,
                  output_dir: Path) -> dict | None:
    """delphi's detection and fuzzing scores (delphi.score) into each result, and delphi's files beside results.json;
    the summary of the scores."""
    from gradspace.labeling import delphi_scoring

    if config.delphi.score:
        delphi_scorer = delphi_scoring.DelphiScorer(scorer, config.delphi.detection_template, config.delphi.fuzz_threshold,
                                                    config.prompt.add_bos)
        delphi_scoring.score_latents(delphi_scorer, features, results, tokenizer, seed)

    def hookpoint_of(feature: FeatureData):
        if feature.windows is not None:
            return feature.windows.hookpoint, feature.windows.latent
        if sae is not None and feature.name.startswith("latent"):
            return sae.hook_name, int(feature.name[len("latent"):])
        return None

    delphi_scoring.write_files(output_dir, features, results, hookpoint_of, config.delphi.explanations)
    return delphi_scoring.summary(results)
