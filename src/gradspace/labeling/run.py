"""`label.py`'s task: learn a label for each feature, pick the best hard label, score it and the baselines on
held-out tokens, and write `results.json` (and a W&B table)."""

from __future__ import annotations

import logging
import time
from dataclasses import fields
from pathlib import Path
from typing import Mapping

import torch
from omegaconf import DictConfig, OmegaConf

from gradspace.errors import GradspaceError
from gradspace.labeling.baselines import most_frequent_token, vocabulary_projection
from gradspace.labeling.discrete import HardLabelScorer, select_label
from gradspace.labeling.discriminator import Discriminator
from gradspace.labeling.features import (KINDS, Corpus, FeatureData, category_features, load_corpus, sae_latent_features,
                                         token_counts, word_list_features)
from gradspace.labeling.prompts import PromptBuilder, resolve_prompt_spec
from gradspace.labeling.sae import SparseAutoencoder, load_local_sae, load_saelens_sae
from gradspace.labeling.soft_label import BalancedExamples, SoftLabel, SoftLabelConfig, allowed_label_tokens
from gradspace.models.hooks import resolve_hook
from gradspace.models.loading import LoadedModel, load_model
from gradspace.utils.io import write_results
from gradspace.utils.wandb_setup import logger_from_config
from gradspace.utils.run_config import loggable_config
from gradspace.utils.seeding import seed_everything

log = logging.getLogger(__name__)
SAE_SOURCES = ("builtin", "local", "saelens")


def load_sae(sae_cfg: Mapping, loaded: LoadedModel, corpus: Corpus | None, cache_dir: Path) -> SparseAutoencoder:
    source = sae_cfg.get("source")
    if source == "builtin":
        from gradspace.labeling.sae_training import BuiltinSAEConfig, ensure_builtin_sae

        if corpus is None:
            raise GradspaceError("the built-in SAE trains on a corpus; use a synthetic model or set feature.corpus_path")
        config = BuiltinSAEConfig(**{f.name: sae_cfg[f.name] for f in fields(BuiltinSAEConfig) if f.name in sae_cfg})
        sae = ensure_builtin_sae(config, loaded.model, loaded.tokenizer, corpus.train, corpus.bos, f"{loaded.path}@{loaded.revision}", cache_dir)
    elif source == "local":
        sae = load_local_sae(sae_cfg.get("path"))
    elif source == "saelens":
        sae = load_saelens_sae(str(sae_cfg.get("release")), str(sae_cfg.get("id")))
    else:
        raise GradspaceError(f"sae.source='{source}' is unknown; use one of {', '.join(SAE_SOURCES)}")
    resolve_hook(loaded.model, sae.hook_name)  # a clear error now rather than a missing activation later
    hidden = loaded.model.config.hidden_size
    if sae.d_in != hidden:
        raise GradspaceError(f"the SAE reads {sae.d_in}-dim activations but the model's hidden size is {hidden}; use an SAE of this model")
    return sae.to(loaded.model.device)


def build_features(cfg: DictConfig, loaded: LoadedModel, cache_dir: Path) -> tuple[list[FeatureData], SparseAutoencoder | None]:
    feature_cfg = cfg.feature
    kind = feature_cfg.get("kind")
    if kind not in KINDS:
        raise GradspaceError(f"feature.kind='{kind}' is unknown; use one of {', '.join(KINDS)}")
    ids = list(feature_cfg.get("ids") or [])
    if not ids:
        raise GradspaceError("feature.ids is empty; name at least one feature, e.g. feature.ids=[mammal]")
    corpus = load_corpus(feature_cfg, cfg.model, cache_dir)
    tokenizer = loaded.tokenizer
    fraction, seed = float(feature_cfg.get("heldout_fraction", 0.3)), int(feature_cfg.get("split_seed", 0))
    if kind == "sae":
        if not cfg.get("sae"):
            raise GradspaceError("feature.kind=sae needs an SAE; add sae=builtin (or sae=local sae.path=..., or sae=saelens)")
        if corpus is None:
            raise GradspaceError("SAE latents are found in a corpus; set feature.corpus_path=<text file, one text per line>")
        sae = load_sae(cfg.sae, loaded, corpus, cache_dir)
        features = sae_latent_features(ids, loaded.model, tokenizer, sae, corpus, float(feature_cfg.get("threshold", 0.0)),
                                       int(feature_cfg.get("max_examples", 2000)), seed, int(feature_cfg.get("top_n", 20)))
        return features, sae
    counts = token_counts(tokenizer, corpus.train) if corpus else None
    if kind == "category":
        return category_features(ids, tokenizer, fraction, seed, counts), None
    sets = OmegaConf.to_container(feature_cfg.get("sets") or {}, resolve=True)
    negatives = feature_cfg.get("negatives")
    return word_list_features(sets, [str(i) for i in ids], list(negatives) if negatives else None, tokenizer, fraction, seed, counts), None


def _token_entry(tokenizer, label_ids) -> str:
    return tokenizer.decode(list(label_ids)).strip()


def run(cfg: DictConfig) -> dict:
    import hydra
    from torch.utils.data import DataLoader

    seed_everything(int(cfg.seed))
    cache_dir = Path(str(cfg.paths.cache_dir)).expanduser()
    output_dir = Path(str(cfg.paths.output_dir))
    loaded = load_model(cfg.model, cache_dir, progress=False)
    tokenizer = loaded.tokenizer
    label_cfg = SoftLabelConfig(**{f.name: cfg.label[f.name] for f in fields(SoftLabelConfig) if f.name in cfg.label})
    spec = resolve_prompt_spec(cfg.prompt, tokenizer, str(cfg.model.get("source", "hf")))
    builder = PromptBuilder(spec, tokenizer, label_cfg.length, add_bos=bool(cfg.prompt.get("add_bos", True)))
    features, sae = build_features(cfg, loaded, cache_dir)
    if any(f.train_positive[0].context for f in features) and not builder.uses_context:
        log.info("the prompt has no {context} slot: context-dependent activations are judged from the word alone")
    names = [f.name for f in features]

    discriminator = Discriminator(loaded.model, builder)
    allowed = allowed_label_tokens(tokenizer, builder, discriminator.embedding.shape[0], label_cfg.vocabulary)
    steps = int(cfg.label.steps)
    if steps <= 0:
        raise GradspaceError(f"label.steps={steps} must be positive (the example stream is endless)")
    module = SoftLabel(discriminator, allowed, names, label_cfg, hydra.utils.instantiate(cfg.label.optimizer),
                       total_steps=steps, seed=int(cfg.seed))
    logger = logger_from_config(cfg, default_name=f"label-{cfg.model.name}-{'+'.join(names)[:60]}-s{cfg.seed}", tags=["label"])
    # The trainer group's defaults are for epoch-based training; labeling runs a fixed number of steps, saves no checkpoints.
    trainer = hydra.utils.instantiate(cfg.trainer, logger=logger if logger is not None else False, max_steps=steps, max_epochs=-1,
                                      enable_checkpointing=False, enable_model_summary=False, gradient_clip_val=None,
                                      log_every_n_steps=min(int(cfg.trainer.get("log_every_n_steps", 10)), steps))
    loader = DataLoader(BalancedExamples(features, builder, label_cfg.batch_size, tokenizer.pad_token_id, int(cfg.seed)),
                        batch_size=None, num_workers=0)

    start = time.perf_counter()
    trainer.fit(module, loader)
    train_seconds = time.perf_counter() - start
    module.to(trainer.strategy.root_device)
    module.eval()

    with torch.no_grad():
        p_final = module.distribution().detach()
    restarts = label_cfg.restarts
    unembedding = loaded.model.get_output_embeddings().weight.detach()
    results, table = [], []
    for index, feature in enumerate(features):
        feature_start = time.perf_counter()
        p = p_final[index * restarts : (index + 1) * restarts]
        limit = int(cfg.discrete.max_examples)
        selection = HardLabelScorer(discriminator, feature.train_positive[:limit], feature.train_negative[:limit], tokenizer.pad_token_id,
                                    allowed, label_cfg.kl_weight)
        visited = sorted(set().union(*module.visited[index * restarts : (index + 1) * restarts]))
        chosen = select_label(selection, p, int(cfg.discrete.top), int(cfg.discrete.sweeps), visited, int(cfg.discrete.swap_rounds),
                              int(cfg.discrete.swap_top), int(cfg.discrete.swap_beam), int(cfg.discrete.prior_top))
        heldout_limit = int(cfg.evaluation.max_examples)
        heldout = HardLabelScorer(discriminator, feature.heldout_positive[:heldout_limit], feature.heldout_negative[:heldout_limit],
                                  tokenizer.pad_token_id, allowed)

        baseline_labels = {}
        frequent = most_frequent_token(feature.top_activating_tokens, allowed)
        if frequent is not None:
            baseline_labels["most_frequent_top_activating"] = (frequent,)
        if feature.decoder_direction is not None:
            projection = vocabulary_projection(unembedding, feature.decoder_direction, allowed, top=10)
            baseline_labels["vocabulary_projection"] = (projection[0],)
        candidates = [chosen.best.label_ids] + [ids for ids in baseline_labels.values() if len(ids) == label_cfg.length]
        heldout_scores = {s.label_ids: s for s in heldout.score(list(dict.fromkeys(candidates)))}
        best = heldout_scores[chosen.best.label_ids]

        # The restart where the chosen label is most probable gives its probability and the top-10 shown beside it.
        token_probs = torch.stack([p[:, position, token] for position, token in enumerate(best.label_ids)], dim=-1).prod(-1)
        restart = int(token_probs.argmax())
        top10 = p[restart, 0].topk(10)
        baselines = {}
        for kind, ids in baseline_labels.items():
            score = heldout_scores.get(ids)
            baselines[kind] = {
                "label": _token_entry(tokenizer, ids), "token_ids": list(ids),
                "heldout_accuracy": score.balanced_accuracy if score else None, "heldout_auroc": score.auroc if score else None,
            }
            if kind == "vocabulary_projection":
                baselines[kind]["top10"] = [_token_entry(tokenizer, [t]) for t in projection]
        entry = {
            "feature": feature.name,
            "label": _token_entry(tokenizer, best.label_ids),
            "label_token_ids": list(best.label_ids),
            "probability": float(token_probs[restart]),
            "top10": [{"token": _token_entry(tokenizer, [int(t)]), "probability": float(pr)} for pr, t in zip(top10.values, top10.indices)],
            "restart_argmax": [_token_entry(tokenizer, p[r].argmax(-1).tolist()) for r in range(restarts)],
            "selection": {"accuracy": chosen.best.balanced_accuracy, "auroc": chosen.best.auroc, "loss": chosen.best.loss,
                          "naturalness": chosen.best.naturalness, "objective": chosen.best.objective,
                          "n_candidates": len(chosen.scored), "found_by": chosen.found_by[chosen.best.label_ids],
                          "ranking": [[_token_entry(tokenizer, s.label_ids), round(s.objective, 4), round(s.balanced_accuracy, 4)] for s in chosen.scored[:10]]},
            "heldout_accuracy": best.balanced_accuracy,
            "heldout_auroc": best.auroc,
            "heldout_examples": {"positive": len(feature.heldout_positive[:heldout_limit]), "negative": len(feature.heldout_negative[:heldout_limit])},
            "baselines": baselines,
            "example_prompt": builder.render_text(feature.heldout_positive[0], best.label_ids),
            # The K features train in one batch: each gets an equal share of the training time.
            "wall_seconds": train_seconds / len(features) + time.perf_counter() - feature_start,
        }
        results.append(entry)
        table.append([feature.name, entry["label"], round(entry["probability"], 4), round(best.balanced_accuracy, 4), round(best.auroc, 4),
                      " ".join(t["token"] for t in entry["top10"]),
                      *[baselines.get(k, {}).get("label") for k in ("most_frequent_top_activating", "vocabulary_projection")]])
        log.info("%s: label %r p=%.3f held-out accuracy %.3f AUROC %.3f", feature.name, entry["label"], entry["probability"],
                 best.balanced_accuracy, best.auroc)

    summary = {
        "model": {"name": loaded.name, "revision": loaded.revision, "path": loaded.path},
        "prompt": {"style": spec.style, "template": spec.template, "answers": list(spec.answers)},
        "sae": None if sae is None else {"hook_name": sae.hook_name, "architecture": sae.architecture, "d_sae": sae.d_sae, **sae.extra_cfg},
        "train_seconds": train_seconds,
        "steps": int(module.global_step),
        "features": results,
        "trajectory": [{**point, "top_token": [[_token_entry(tokenizer, [t]) for t in row] for row in point["top_token"]]}
                       for point in module.trajectory[:: max(1, len(module.trajectory) // 50)]],
        "config": loggable_config(cfg),
    }
    write_results(output_dir, summary)
    if logger is not None:
        from gradspace.utils.wandb_setup import finish_wandb

        logger.log_table(key="labels", columns=["feature", "label", "probability", "heldout_accuracy", "heldout_auroc", "top10",
                                                "baseline_frequent", "baseline_projection"], data=table)
        logger.log_metrics({f"heldout/accuracy/{r['feature']}": r["heldout_accuracy"] for r in results}
                           | {f"heldout/auroc/{r['feature']}": r["heldout_auroc"] for r in results})
        finish_wandb()
    return summary
