"""`label.py`'s task: learn a label for each feature, pick the best hard label, score it and the baselines on
held-out tokens, and write `results.json` (and a W&B table)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from gradspace.errors import GradspaceError
from gradspace.labeling.baselines import most_frequent_token, vocabulary_projection
from gradspace.labeling.config import (BuiltinSAEConfig, LabelingConfig, LocalSAEConfig, SAEFeatureConfig, SAELensConfig,
                                       WordsFeatureConfig)
from gradspace.labeling.discrete import HardLabelScorer, select_label
from gradspace.labeling.discriminator import Discriminator
from gradspace.labeling.features import (Corpus, FeatureData, category_features, load_corpus, sae_latent_features, token_counts,
                                         word_list_features)
from gradspace.labeling.prompts import PromptBuilder, PromptSpec, resolve_prompt_spec
from gradspace.labeling.sae import SparseAutoencoder, load_local_sae, load_saelens_sae
from gradspace.labeling.soft_label import BalancedExamples, SoftLabel, allowed_label_tokens
from gradspace.models.hooks import resolve_hook
from gradspace.models.loading import LoadedModel, load_model
from gradspace.utils.io import write_results
from gradspace.utils.run_config import loggable_config
from gradspace.utils.seeding import seed_everything
from gradspace.utils.wandb_setup import logger_from_config

log = logging.getLogger(__name__)
BASELINE_KINDS = ("most_frequent_top_activating", "vocabulary_projection")


def load_sae(config: BuiltinSAEConfig | LocalSAEConfig | SAELensConfig, loaded: LoadedModel, corpus: Corpus,
             cache_dir: Path) -> SparseAutoencoder:
    if isinstance(config, BuiltinSAEConfig):
        from gradspace.labeling.sae_training import ensure_builtin_sae

        sae = ensure_builtin_sae(config, loaded.model, loaded.tokenizer, corpus.train, f"{loaded.path}@{loaded.revision}", cache_dir)
    elif isinstance(config, LocalSAEConfig):
        sae = load_local_sae(config.path)
    else:
        sae = load_saelens_sae(str(config.release), str(config.id))
    resolve_hook(loaded.model, sae.hook_name)  # a clear error now rather than a missing activation later
    hidden = loaded.model.config.hidden_size
    if sae.d_in != hidden:
        raise GradspaceError(f"the SAE reads {sae.d_in}-dim activations but the model's hidden size is {hidden}; use an SAE of this model")
    return sae.to(loaded.model.device)


def build_features(config: LabelingConfig, model_cfg, loaded: LoadedModel, cache_dir: Path
                   ) -> tuple[list[FeatureData], SparseAutoencoder | None]:
    feature = config.feature
    corpus = load_corpus(feature, model_cfg, cache_dir)
    tokenizer = loaded.tokenizer
    if isinstance(feature, SAEFeatureConfig):
        if config.sae is None:
            raise GradspaceError("feature.kind=sae needs an SAE; add sae=builtin (or sae=local sae.path=..., or sae=saelens)")
        if corpus is None:
            raise GradspaceError("SAE latents are found in a corpus; set feature.corpus_path=<text file, one text per line>")
        sae = load_sae(config.sae, loaded, corpus, cache_dir)
        features = sae_latent_features(feature.ids, loaded.model, tokenizer, sae, corpus, feature.threshold, feature.max_examples,
                                       feature.split_seed, feature.top_n)
        return features, sae
    counts = token_counts(tokenizer, corpus.train) if corpus else None
    if isinstance(feature, WordsFeatureConfig):
        ids = [str(i) for i in feature.ids]
        return word_list_features(feature.sets, ids, feature.negatives, tokenizer, feature.heldout_fraction, feature.split_seed, counts), None
    return category_features(feature.ids, tokenizer, feature.heldout_fraction, feature.split_seed, counts), None


def token_text(tokenizer, token_ids) -> str:
    return tokenizer.decode(list(token_ids)).strip()


def train_soft_labels(cfg: DictConfig, config: LabelingConfig, discriminator: Discriminator, allowed: torch.Tensor,
                      features: list[FeatureData], logger) -> tuple[SoftLabel, float]:
    """All features' soft labels trained side by side by the configured Lightning trainer; (module, seconds)."""
    import hydra
    from torch.utils.data import DataLoader

    names = [f.name for f in features]
    module = SoftLabel(discriminator, allowed, names, config.label, hydra.utils.instantiate(config.label.optimizer),
                       total_steps=config.label.steps, seed=int(cfg.seed))
    # label.yaml sets the trainer's steps from label.steps and turns checkpoints off; every trainer.* override applies.
    trainer = hydra.utils.instantiate(cfg.trainer, logger=logger if logger is not None else False)
    pad_id = discriminator.builder.tokenizer.pad_token_id
    loader = DataLoader(BalancedExamples(features, discriminator.builder, config.label.batch_size, pad_id, int(cfg.seed)),
                        batch_size=None, num_workers=0)
    start = time.perf_counter()
    trainer.fit(module, loader)
    seconds = time.perf_counter() - start
    module.to(trainer.strategy.root_device)
    module.eval()
    return module, seconds


def baseline_labels(feature: FeatureData, allowed: torch.Tensor, unembedding: torch.Tensor) -> tuple[dict, list[int]]:
    """The labels found without optimisation ({kind: token ids}), and the vocabulary projection's top 10."""
    labels, projection = {}, []
    frequent = most_frequent_token(feature.top_activating_tokens, allowed)
    if frequent is not None:
        labels["most_frequent_top_activating"] = (frequent,)
    if feature.decoder_direction is not None:
        projection = vocabulary_projection(unembedding, feature.decoder_direction, allowed, top=10)
        labels["vocabulary_projection"] = (projection[0],)
    return labels, projection


def label_feature(config: LabelingConfig, feature: FeatureData, p: torch.Tensor, visited: list[tuple[int, ...]],
                  discriminator: Discriminator, allowed: torch.Tensor, unembedding: torch.Tensor) -> dict:
    """One feature's result: the discrete step over its restarts' soft labels `p` [R, L, V], then the chosen label
    and the baselines scored on held-out examples."""
    builder = discriminator.builder
    tokenizer, pad_id = builder.tokenizer, builder.tokenizer.pad_token_id
    limit, heldout_limit = config.discrete.max_examples, config.evaluation.max_examples
    selection = HardLabelScorer(discriminator, feature.train_positive[:limit], feature.train_negative[:limit], pad_id, allowed,
                                config.label.kl_weight)
    chosen = select_label(selection, p, config.discrete, visited)
    heldout = HardLabelScorer(discriminator, feature.heldout_positive[:heldout_limit], feature.heldout_negative[:heldout_limit],
                              pad_id, allowed)
    baselines_ids, projection = baseline_labels(feature, allowed, unembedding)
    candidates = [chosen.best.label_ids] + [ids for ids in baselines_ids.values() if len(ids) == config.label.length]
    heldout_scores = {s.label_ids: s for s in heldout.score_labels(list(dict.fromkeys(candidates)))}
    best = heldout_scores[chosen.best.label_ids]

    # The restart where the chosen label is most probable gives its probability and the top-10 shown beside it.
    token_probs = torch.stack([p[:, position, token] for position, token in enumerate(best.label_ids)], dim=-1).prod(-1)
    restart = int(token_probs.argmax())
    top10 = p[restart, 0].topk(10)
    baselines = {}
    for kind, ids in baselines_ids.items():
        score = heldout_scores.get(ids)
        baselines[kind] = {
            "label": token_text(tokenizer, ids), "token_ids": list(ids),
            "heldout_accuracy": score.balanced_accuracy if score else None, "heldout_auroc": score.auroc if score else None,
        }
        if kind == "vocabulary_projection":
            baselines[kind]["top10"] = [token_text(tokenizer, [t]) for t in projection]
    return {
        "feature": feature.name,
        "label": token_text(tokenizer, best.label_ids),
        "label_token_ids": list(best.label_ids),
        "probability": float(token_probs[restart]),
        "top10": [{"token": token_text(tokenizer, [int(t)]), "probability": float(pr)} for pr, t in zip(top10.values, top10.indices)],
        "restart_argmax": [token_text(tokenizer, p[r].argmax(-1).tolist()) for r in range(p.shape[0])],
        "selection": {"accuracy": chosen.best.balanced_accuracy, "auroc": chosen.best.auroc, "loss": chosen.best.loss,
                      "naturalness": chosen.best.naturalness, "objective": chosen.best.objective,
                      "n_candidates": len(chosen.scored), "found_by": chosen.found_by[chosen.best.label_ids],
                      "ranking": [[token_text(tokenizer, s.label_ids), round(s.objective, 4), round(s.balanced_accuracy, 4)]
                                  for s in chosen.scored[:10]]},
        "heldout_accuracy": best.balanced_accuracy,
        "heldout_auroc": best.auroc,
        "heldout_examples": {"positive": len(feature.heldout_positive[:heldout_limit]), "negative": len(feature.heldout_negative[:heldout_limit])},
        "baselines": baselines,
        "example_prompt": builder.render_text(feature.heldout_positive[0], best.label_ids),
    }


def log_results(logger, results: list[dict]) -> None:
    """The labels as a W&B table and the held-out metrics as scalars."""
    from gradspace.utils.wandb_setup import finish_wandb

    table = [[r["feature"], r["label"], round(r["probability"], 4), round(r["heldout_accuracy"], 4), round(r["heldout_auroc"], 4),
              " ".join(t["token"] for t in r["top10"]), *[r["baselines"].get(k, {}).get("label") for k in BASELINE_KINDS]]
             for r in results]
    logger.log_table(key="labels", columns=["feature", "label", "probability", "heldout_accuracy", "heldout_auroc", "top10",
                                            "baseline_frequent", "baseline_projection"], data=table)
    logger.log_metrics({f"heldout/accuracy/{r['feature']}": r["heldout_accuracy"] for r in results}
                       | {f"heldout/auroc/{r['feature']}": r["heldout_auroc"] for r in results})
    finish_wandb()


def run(cfg: DictConfig) -> dict:
    config = LabelingConfig.from_config(cfg)  # every labeling section checked before any model is loaded
    seed_everything(int(cfg.seed))
    cache_dir = Path(str(cfg.paths.cache_dir)).expanduser()
    loaded = load_model(cfg.model, cache_dir, progress=False)
    tokenizer = loaded.tokenizer
    spec: PromptSpec = resolve_prompt_spec(config.prompt, tokenizer, str(cfg.model.get("source", "hf")))
    builder = PromptBuilder(spec, tokenizer, config.label.length, add_bos=config.prompt.add_bos)
    features, sae = build_features(config, cfg.model, loaded, cache_dir)
    if any(f.train_positive[0].context for f in features) and not builder.uses_context:
        log.info("the prompt has no {context} slot: context-dependent activations are judged from the word alone")
    names = [f.name for f in features]
    discriminator = Discriminator(loaded.model, builder)
    allowed = allowed_label_tokens(tokenizer, builder, discriminator.embedding.shape[0], config.label.vocabulary)
    logger = logger_from_config(cfg, default_name=f"label-{cfg.model.name}-{'+'.join(names)[:60]}-s{cfg.seed}", tags=["label"])
    module, train_seconds = train_soft_labels(cfg, config, discriminator, allowed, features, logger)

    with torch.no_grad():
        p_final = module.distribution().detach()
    restarts = config.label.restarts
    unembedding = loaded.model.get_output_embeddings().weight.detach()
    results = []
    for index, feature in enumerate(features):
        feature_start = time.perf_counter()
        rows = slice(index * restarts, (index + 1) * restarts)
        visited = sorted(set().union(*module.visited[rows]))
        entry = label_feature(config, feature, p_final[rows], visited, discriminator, allowed, unembedding)
        # The K features train in one batch: each gets an equal share of the training time.
        entry["wall_seconds"] = train_seconds / len(features) + time.perf_counter() - feature_start
        results.append(entry)
        log.info("%s: label %r p=%.3f held-out accuracy %.3f AUROC %.3f", feature.name, entry["label"], entry["probability"],
                 entry["heldout_accuracy"], entry["heldout_auroc"])

    summary = {
        "model": {"name": loaded.name, "revision": loaded.revision, "path": loaded.path},
        "prompt": {"style": spec.style, "template": spec.template, "answers": list(spec.answers)},
        "sae": None if sae is None else {"hook_name": sae.hook_name, "architecture": sae.architecture, "d_sae": sae.d_sae, **sae.extra_cfg},
        "train_seconds": train_seconds,
        "steps": int(module.global_step),
        "features": results,
        "trajectory": [{**point, "top_token": [[token_text(tokenizer, [t]) for t in row] for row in point["top_token"]]}
                       for point in module.trajectory[:: max(1, len(module.trajectory) // 50)]],
        "config": loggable_config(cfg),
    }
    write_results(Path(str(cfg.paths.output_dir)), summary)
    if logger is not None:
        log_results(logger, results)
    return summary
