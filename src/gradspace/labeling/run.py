"""`label.py`'s task: check that the discriminator can tell each feature apart (the oracle: its category word as
the label), learn a soft label for each feature that can, pick the best hard label on validation examples, score
it, the soft label's own argmax and top-10, and the baselines on held-out tokens, and write `results.json` (and a
W&B table)."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from gradspace.labeling.config import DelphiFeatureConfig, LabelingConfig
from gradspace.labeling.delphi_scoring import DelphiScorer
from gradspace.labeling.oracle_gate import check_oracles, gate
from gradspace.labeling.outcome import label_one
from gradspace.labeling.plan import plan_labels
from gradspace.labeling.report import collect_results, finish_delphi, log_feature, log_results
from gradspace.labeling.results import LabelResults
from gradspace.labeling.scorer import build_scorer
from gradspace.labeling.setup import build_discriminator, build_features
from gradspace.labeling.window_readout import check_window_readout
from gradspace.models.loading import load_model
from gradspace.utils.io import write_results
from gradspace.utils.seeding import seed_everything, set_torch_threads
from gradspace.utils.wandb_setup import loggers_from_config

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> LabelResults:
    config = LabelingConfig.from_config(cfg)  # every labeling section checked before any model is loaded
    seed_everything(int(cfg.seed))
    set_torch_threads(cfg.get("torch_threads"))
    cache_dir = Path(str(cfg.paths.cache_dir)).expanduser()
    output_dir = Path(str(cfg.paths.output_dir))
    loaded = load_model(cfg.model, cache_dir, progress=False)
    spec, discriminator, allowed = build_discriminator(config, cfg.model, loaded)
    if isinstance(config.feature, DelphiFeatureConfig) and config.feature.fit_on == "windows":
        check_window_readout(discriminator.builder, spec.template)
    features, sae = build_features(config, cfg.model, loaded, cache_dir)
    if any(f.train_positive[0].context for f in features) and not discriminator.builder.uses_context:
        log.info("the prompt has no {context} slot: context-dependent activations are judged from the word alone")
    # The oracle check first: a feature the readout cannot tell apart with its own name gets no label.
    oracles = check_oracles(config, discriminator, allowed, features)
    trainable, results = gate(config, oracles, features)
    names = "+".join(f.name for f in features)[:60]
    loggers = loggers_from_config(cfg, default_name=f"label-{cfg.model.name}-{names}-s{cfg.seed}", tags=["label"])
    plan = plan_labels(cfg, config, loaded, spec, discriminator, allowed, trainable, loggers)
    scorer = build_scorer(config, cache_dir, loaded) if config.evaluation.scorer_model else None
    # delphi's scorer reads windows token by token: a readout that cannot is refused before any label is fitted
    delphi_scorer = DelphiScorer(scorer, config.delphi.fuzz_threshold) if config.delphi and config.delphi.score else None
    unembedding = loaded.model.get_output_embeddings().weight.detach()
    for index, feature in enumerate(trainable):
        results[feature.name] = label_one(config, plan, index, feature, len(trainable), discriminator, allowed, unembedding,
                                          oracles, scorer)
        log_feature(feature, results[feature.name])
    in_order = [results[f.name] for f in features]
    delphi = None if config.delphi is None else finish_delphi(config, features, in_order, delphi_scorer, sae, loaded.tokenizer,
                                                               int(cfg.seed), output_dir)
    summary = collect_results(cfg, loaded, spec, sae, plan, scorer, oracles, in_order, delphi)
    write_results(output_dir, summary.to_json())
    if loggers:
        log_results(loggers, in_order)
    return summary
