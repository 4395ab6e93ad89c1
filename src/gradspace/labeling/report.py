"""What a run shows: a log line per feature, the results it writes, the W&B table, and delphi's explanation and
score files."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from gradspace.labeling import delphi_scoring
from gradspace.labeling.config import LabelingConfig
from gradspace.labeling.features import FeatureData
from gradspace.labeling.oracle_gate import Oracles
from gradspace.labeling.plan import LabelPlan
from gradspace.labeling.prompts import PromptSpec
from gradspace.labeling.results import (
    DelphiSummary,
    FeatureLabel,
    FeatureResult,
    LabelResults,
    ModelSummary,
    PromptSummary,
    ScorerSummary,
)
from gradspace.labeling.sae import SparseAutoencoder
from gradspace.labeling.scorer import SecondModelScorer
from gradspace.labeling.vocabulary import token_text
from gradspace.models.loading import LoadedModel
from gradspace.utils.run_config import loggable_config
from gradspace.utils.wandb_setup import finish_wandb, wandb_logger_of

log = logging.getLogger(__name__)
# The baselines of the W&B table's columns, in their order.
BASELINE_KINDS = ("most_frequent_top_activating", "first_listed", "vocabulary_projection", "vocabulary_scan")


def log_feature(feature: FeatureData, entry: FeatureLabel) -> None:
    # Without a category word (SAE latents) what the feature fires on is what its label is to be read against.
    soft = entry.soft_label
    log.info("%s: %s | label %r (%s, accepted %s) held-out accuracy %.3f AUROC %.3f%s | baseline %s%s", feature.name,
             f"fires most on {', '.join(dict.fromkeys(entry.top_activating))!r}" if entry.oracle is None
             else f"oracle AUROC {entry.oracle.heldout_auroc:.3f} ({entry.oracle.label!r})",
             entry.label, entry.selection.found_by, entry.accepted, entry.heldout_accuracy, entry.heldout_auroc,
             "" if soft is None else f" | soft-label argmax {soft.argmax!r} held-out AUROC {soft.heldout_auroc:.3f}",
             {k: (b.label, None if b.heldout_auroc is None else round(b.heldout_auroc, 3)) for k, b in entry.baselines.present().items()},
             "" if entry.scorer is None else f" | scored by {entry.scorer.model}: AUROC {entry.scorer.heldout_auroc:.3f}")


def collect_results(cfg: DictConfig, loaded: LoadedModel, spec: PromptSpec, sae: SparseAutoencoder | None, plan: LabelPlan,
                    scorer: SecondModelScorer | None, oracles: Oracles, features: list[FeatureResult],
                    delphi: DelphiSummary | None) -> LabelResults:
    """The run's results: its model, prompt and SAE, each feature's result, and the soft labels' trajectory."""
    tokenizer = loaded.tokenizer
    trajectory = [] if plan.module is None else [
        {**point, "top_token": [[token_text(tokenizer, [t]) for t in row] for row in point["top_token"]]}
        for point in plan.module.trajectory[:: max(1, len(plan.module.trajectory) // 50)]]
    return LabelResults(
        model=ModelSummary(loaded.name, loaded.revision, loaded.path),
        prompt=PromptSummary(spec.style, spec.template, None if spec.answers is None else list(spec.answers), spec.neutral),
        sae=None if sae is None else {"hook_name": sae.hook_name, "architecture": sae.architecture, "d_sae": sae.d_sae, **sae.extra_cfg},
        readout=spec.readout, method=plan.method, scorer=None if scorer is None else ScorerSummary(**scorer.summary()),
        delphi=delphi, oracle_seconds=oracles.seconds, train_seconds=plan.train_seconds,
        steps=0 if plan.module is None else int(plan.module.global_step), features=features, trajectory=trajectory,
        config=loggable_config(cfg))


def log_results(loggers: list, results: list[FeatureResult]) -> None:
    """The held-out metrics as scalars into every tracker, and the labels as a W&B table."""
    labelled = [r for r in results if isinstance(r, FeatureLabel)]
    rounded = lambda value: None if value is None else round(value, 4)  # noqa: E731
    table = [[r.feature, rounded(r.oracle and r.oracle.heldout_auroc), r.method, r.label, rounded(r.probability),
              round(r.heldout_accuracy, 4), round(r.heldout_auroc, 4), r.soft_label and r.soft_label.argmax,
              rounded(r.soft_label and r.soft_label.heldout_auroc), None if r.top10 is None else " ".join(t.token for t in r.top10),
              *[getattr(r.baselines, k) and getattr(r.baselines, k).label for k in BASELINE_KINDS],
              rounded(r.baselines.vocabulary_scan and r.baselines.vocabulary_scan.heldout_auroc),
              r.scorer and r.scorer.model, rounded(r.scorer and r.scorer.heldout_auroc)]
             for r in labelled]
    metrics = ({f"heldout/accuracy/{r.feature}": r.heldout_accuracy for r in labelled}
               | {f"heldout/auroc/{r.feature}": r.heldout_auroc for r in labelled}
               | {f"scorer/auroc/{r.feature}": r.scorer.heldout_auroc for r in labelled if r.scorer}
               | {f"oracle/auroc/{r.feature}": r.oracle.heldout_auroc for r in results if r.oracle})
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
    if any(isinstance(r, FeatureLabel) and r.delphi for r in results):
        columns, rows = delphi_scoring.table(results)
        wandb_logger.log_table(key="delphi", columns=columns, data=rows)
    finish_wandb()


def finish_delphi(config: LabelingConfig, features: list[FeatureData], results: list[FeatureResult],
                  scorer: delphi_scoring.DelphiScorer | None, sae, tokenizer, seed: int, output_dir: Path) -> DelphiSummary | None:
    """delphi's detection and fuzzing scores (by `scorer`, where delphi.score) into each result, and delphi's files
    beside results.json; the summary of the scores."""
    files = delphi_scoring.score_latents(scorer, features, results, tokenizer, seed) if scorer else {}

    def hookpoint_of(feature: FeatureData):
        if feature.windows is not None:
            return feature.windows.hookpoint, feature.windows.latent
        if sae is not None and feature.name.startswith("latent"):
            return sae.hook_name, int(feature.name[len("latent"):])
        return None

    delphi_scoring.write_files(output_dir, features, results, files, hookpoint_of, config.delphi.explanations)
    return delphi_scoring.summary(results)
