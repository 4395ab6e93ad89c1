"""`label.py`'s task: check that the discriminator can tell each feature apart (the oracle: its category word as
the label), learn a soft label for each feature that can, pick the best hard label on validation examples, score
it, the soft label's own argmax and top-10, and the baselines on held-out tokens, and write `results.json` (and a
W&B table)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from gradspace.labeling.config import LabelingConfig
from gradspace.labeling.discriminator import Discriminator
from gradspace.labeling.features import FeatureData
from gradspace.labeling.methods import (
    FeatureScorers,
    descent_label,
    resolve_method,
    run_scan,
    scan_feasible,
    train_soft_labels,
)
from gradspace.labeling.oracle import OracleResult, oracle_check
from gradspace.labeling.outcome import (
    frequent_scan_baseline,
    label_feature,
    oracle_summary,
    scan_record,
    unlabelled_feature,
)
from gradspace.labeling.prompts import PromptBuilder, PromptSpec
from gradspace.labeling.report import finish_delphi, log_feature, log_results
from gradspace.labeling.scan import frequent_tokens, vocabulary_scan
from gradspace.labeling.scorer import build_scorer
from gradspace.labeling.setup import build_discriminator, build_features, without_context
from gradspace.labeling.soft_label import SoftLabel
from gradspace.labeling.vocabulary import token_text
from gradspace.models.loading import LoadedModel, load_model
from gradspace.utils.io import write_results
from gradspace.utils.run_config import loggable_config
from gradspace.utils.seeding import seed_everything, set_torch_threads
from gradspace.utils.wandb_setup import loggers_from_config

log = logging.getLogger(__name__)


@dataclass
class Oracles:
    """Per feature, its oracle check and, with context in the prompt, the same check on the word alone."""

    checks: dict[str, OracleResult | None]
    word_alone: dict[str, OracleResult | None]
    seconds: float


def check_oracles(config: LabelingConfig, discriminator: Discriminator, allowed: torch.Tensor,
                  features: list[FeatureData]) -> Oracles:
    start = time.perf_counter()
    max_examples = config.evaluation.max_examples
    checks = {f.name: oracle_check(discriminator, f, allowed, max_examples) for f in features}
    # With context in the prompt: the same readout given the word alone, what the context adds.
    word_alone = ({f.name: oracle_check(discriminator, without_context(f), allowed, max_examples) for f in features}
                  if discriminator.builder.uses_context else {})
    return Oracles(checks, word_alone, time.perf_counter() - start)


def descends(method: str) -> bool:
    """The method trains soft labels (the scan may run beside it)."""
    return method in ("descent", "both")


@dataclass
class LabelPlan:
    """How this run's trainable features get their labels, and what was trained for them."""

    method: str
    scans: bool  # the exact scan of every allowed token runs (as the method or as the baseline)
    one_token: Discriminator | None  # two-token labels: the one-token readout, for the best one-token label beside them
    frequent: torch.Tensor | None  # a descent without the full scan: the frequent words its baseline scans
    module: SoftLabel | None  # the trained soft labels of a descent
    train_seconds: float

    @property
    def descends(self) -> bool:
        return descends(self.method)


def plan_labels(cfg: DictConfig, config: LabelingConfig, loaded: LoadedModel, spec: PromptSpec, discriminator: Discriminator,
                allowed: torch.Tensor, trainable: list[FeatureData], loggers: list) -> LabelPlan:
    builder, tokenizer = discriminator.builder, loaded.tokenizer
    scans = all(scan_feasible(config, builder, allowed, f) for f in trainable)
    method = resolve_method(config, builder, scans)
    one_token = None
    if config.label.length > 1 and scans:
        one_token = Discriminator(loaded.model, PromptBuilder(spec, tokenizer, 1, add_bos=config.prompt.add_bos)).to(loaded.model.device)
    # Where the exact scan of every token is not run, a descent is compared with the same scan over frequent words.
    frequent = (frequent_tokens(tokenizer, allowed, config.evaluation.frequent_scan_words)
                if descends(method) and not scans and config.label.length == 1 and config.evaluation.frequent_scan_words else None)
    module, train_seconds = (train_soft_labels(cfg, config, discriminator, allowed, trainable, loggers)
                             if trainable and descends(method) else (None, 0.0))
    return LabelPlan(method, scans, one_token, frequent, module, train_seconds)


def label_one(config: LabelingConfig, plan: LabelPlan, index: int, feature: FeatureData, n_trainable: int,
              discriminator: Discriminator, allowed: torch.Tensor, unembedding: torch.Tensor, oracles: Oracles, scorer) -> dict:
    """One trainable feature's results entry: its label by the plan's method, scored beside the baselines."""
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
        descent_seconds = plan.train_seconds / n_trainable + found[2]["selection"]["seconds"]
    else:
        found = (scan.label_ids, scorers.validation.score_labels([scan.label_ids])[0].threshold, scan_record(scan, tokenizer))
    entry = label_feature(config, feature, found, scan, single, "descent" if plan.descends else "scan", scorers,
                          one_token_scorers, allowed, unembedding, oracles.checks[feature.name])
    if plan.descends:  # its share of the soft labels' training and its discrete step's search
        entry["descent_seconds"] = round(descent_seconds, 3)
    if plan.frequent is not None:
        entry["baselines"]["frequent_scan"] = frequent_scan_baseline(vocabulary_scan(scorers.training, tokens=plan.frequent),
                                                                     scorers, feature, tokenizer, len(plan.frequent))
    if oracles.word_alone.get(feature.name) is not None:
        entry["oracle_word_alone"] = oracle_summary(oracles.word_alone[feature.name])
    if feature.word_alone_auroc is not None:
        entry["word_alone_auroc"] = feature.word_alone_auroc
    if scorer is not None:
        entry["scorer"] = scorer.score(feature, entry["label"], tokenizer)
    # The K features train in one batch: each gets an equal share of the training time.
    entry["wall_seconds"] = plan.train_seconds / n_trainable + time.perf_counter() - feature_start
    return entry


def run(cfg: DictConfig) -> dict:
    config = LabelingConfig.from_config(cfg)  # every labeling section checked before any model is loaded
    seed_everything(int(cfg.seed))
    set_torch_threads(cfg.get("torch_threads"))
    cache_dir = Path(str(cfg.paths.cache_dir)).expanduser()
    loaded = load_model(cfg.model, cache_dir, progress=False)
    tokenizer = loaded.tokenizer
    spec, discriminator, allowed = build_discriminator(config, cfg.model, loaded)
    features, sae = build_features(config, cfg.model, loaded, cache_dir)
    if any(f.train_positive[0].context for f in features) and not discriminator.builder.uses_context:
        log.info("the prompt has no {context} slot: context-dependent activations are judged from the word alone")
    # The oracle check first: a feature the readout cannot tell apart with its own name gets no label.
    oracles = check_oracles(config, discriminator, allowed, features)
    minimum = config.evaluation.min_oracle_auroc
    trainable = [f for f in features if oracles.checks[f.name] is None or oracles.checks[f.name].score.auroc >= minimum]
    results = {f.name: unlabelled_feature(f, oracles.checks[f.name], minimum) for f in features if f not in trainable}
    for name, result in results.items():
        if oracles.word_alone.get(name) is not None:
            result["oracle_word_alone"] = oracle_summary(oracles.word_alone[name])
        log.warning("%s: %s", result["feature"], result["note"])
    names = "+".join(f.name for f in features)[:60]
    loggers = loggers_from_config(cfg, default_name=f"label-{cfg.model.name}-{names}-s{cfg.seed}", tags=["label"])
    plan = plan_labels(cfg, config, loaded, spec, discriminator, allowed, trainable, loggers)
    scorer = build_scorer(config, cache_dir, loaded) if config.evaluation.scorer_model else None
    unembedding = loaded.model.get_output_embeddings().weight.detach()
    for index, feature in enumerate(trainable):
        results[feature.name] = label_one(config, plan, index, feature, len(trainable), discriminator, allowed, unembedding,
                                          oracles, scorer)
        log_feature(feature, results[feature.name])
    results = [results[f.name] for f in features]
    delphi = None if config.delphi is None else finish_delphi(config, features, results, scorer, sae, tokenizer, int(cfg.seed),
                                                               Path(str(cfg.paths.output_dir)))
    summary = {
        "model": {"name": loaded.name, "revision": loaded.revision, "path": loaded.path},
        "prompt": {"style": spec.style, "template": spec.template, "answers": None if spec.answers is None else list(spec.answers),
                   "neutral": spec.neutral},
        "sae": None if sae is None else {"hook_name": sae.hook_name, "architecture": sae.architecture, "d_sae": sae.d_sae, **sae.extra_cfg},
        "readout": spec.readout,
        "method": plan.method,
        "scorer": None if scorer is None else scorer.summary(),
        "delphi": delphi,
        "oracle_seconds": oracles.seconds,
        "train_seconds": plan.train_seconds,
        "steps": 0 if plan.module is None else int(plan.module.global_step),
        "features": results,
        "trajectory": [] if plan.module is None else [
            {**point, "top_token": [[token_text(tokenizer, [t]) for t in row] for row in point["top_token"]]}
            for point in plan.module.trajectory[:: max(1, len(plan.module.trajectory) // 50)]],
        "config": loggable_config(cfg),
    }
    write_results(Path(str(cfg.paths.output_dir)), summary)
    if loggers:
        log_results(loggers, results)
    return summary
