"""`label.py`'s task: check that the discriminator can tell each feature apart (the oracle: its category word as
the label), learn a soft label for each feature that can, pick the best hard label on validation examples, score
it, the soft label's own argmax and top-10, and the baselines on held-out tokens, and write `results.json` (and a
W&B table)."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from gradspace.errors import GradspaceError
from gradspace.labeling.baselines import most_frequent_token, vocabulary_projection
from gradspace.labeling.config import (
    BuiltinSAEConfig,
    DelphiFeatureConfig,
    LabelingConfig,
    LocalSAEConfig,
    RecordsFeatureConfig,
    SAEFeatureConfig,
    SAELensConfig,
    WordsFeatureConfig,
)
from gradspace.labeling.discrete import HardLabelScorer, LabelScore, select_label
from gradspace.labeling.discriminator import Discriminator
from gradspace.labeling.features import (
    Corpus,
    FeatureData,
    category_features,
    load_corpus,
    sae_codes,
    sae_latent_features,
    select_latents,
    token_counts,
    word_list_features,
)
from gradspace.labeling.oracle import OracleResult, is_accepted, oracle_check
from gradspace.labeling.prompts import PromptBuilder, PromptSpec, resolve_prompt_spec
from gradspace.labeling.records import record_features
from gradspace.labeling.sae import SparseAutoencoder, load_local_sae, load_saelens_sae
from gradspace.labeling.scan import ScanResult, beam_scan, frequent_tokens, vocabulary_scan
from gradspace.labeling.scorer import build_scorer
from gradspace.labeling.seeding import predicted_categories
from gradspace.labeling.soft_label import BalancedExamples, SoftLabel, allowed_label_tokens
from gradspace.labeling.vocabulary import word_tokens
from gradspace.models.hooks import resolve_hook
from gradspace.models.loading import LoadedModel, load_model
from gradspace.utils.io import write_results
from gradspace.utils.progress import with_step_progress_bar
from gradspace.utils.run_config import loggable_config
from gradspace.utils.seeding import seed_everything, set_torch_threads
from gradspace.utils.wandb_setup import loggers_from_config, wandb_logger_of

log = logging.getLogger(__name__)
BASELINE_KINDS = ("most_frequent_top_activating", "first_listed", "vocabulary_projection", "vocabulary_scan")


def load_sae(config: BuiltinSAEConfig | LocalSAEConfig | SAELensConfig, loaded: LoadedModel, corpus: Corpus,
             cache_dir: Path) -> SparseAutoencoder:
    if isinstance(config, BuiltinSAEConfig):
        from gradspace.labeling.sae_training import ensure_builtin_sae

        if config.hook_name is None:  # the middle layer's residual stream
            config = dataclasses.replace(config, hook_name=f"blocks.{loaded.model.config.num_hidden_layers // 2}.hook_resid_post")
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


def build_discriminator(config: LabelingConfig, model_cfg, loaded: LoadedModel) -> tuple[PromptSpec, Discriminator, torch.Tensor]:
    """The prompt the configuration resolves to for this model, the frozen LM reading it, and the tokens a label may
    use: (spec, discriminator, allowed)."""
    tokenizer = loaded.tokenizer
    spec = resolve_prompt_spec(config.prompt, tokenizer, str(model_cfg.get("source", "hf")), str(model_cfg.name))
    builder = PromptBuilder(spec, tokenizer, config.label.length, add_bos=config.prompt.add_bos)
    discriminator = Discriminator(loaded.model, builder)
    allowed = allowed_label_tokens(tokenizer, builder, discriminator.embedding.shape[0], config.label.vocabulary,
                                   config.label.min_letters, config.label.stop_words)
    return spec, discriminator, allowed


def build_features(config: LabelingConfig, model_cfg, loaded: LoadedModel, cache_dir: Path
                   ) -> tuple[list[FeatureData], SparseAutoencoder | None]:
    feature = config.feature
    tokenizer = loaded.tokenizer
    if isinstance(feature, RecordsFeatureConfig):
        return record_features(feature.path, [str(i) for i in feature.ids], feature.labels, feature.threshold, tokenizer,
                               feature.heldout_fraction, feature.validation_fraction, feature.split_seed, feature.top_n,
                               feature.max_context_tokens), None
    if isinstance(feature, DelphiFeatureConfig):
        return delphi_cache_features(config, loaded)
    corpus = load_corpus(feature, model_cfg, cache_dir)
    if isinstance(feature, SAEFeatureConfig):
        if config.sae is None:
            raise GradspaceError("feature.kind=sae needs an SAE; add sae=builtin (or sae=local sae.path=..., or sae=saelens)")
        if corpus is None:
            raise GradspaceError("SAE latents are found in a corpus; set feature.corpus_path=<text file, one text per line>")
        sae = load_sae(config.sae, loaded, corpus, cache_dir)
        ids = list(feature.ids)
        train_codes = sae_codes(loaded.model, tokenizer, sae, corpus.train)
        if feature.select_count:
            vocabulary = max(len(tokenizer), int(loaded.model.get_input_embeddings().weight.shape[0]))
            selection = select_latents(train_codes, word_tokens(tokenizer, vocabulary, min_letters=1), feature.select_count,
                                       feature.threshold, feature.select_density, feature.select_word_share,
                                       feature.select_min_words)
            log.info("the rule picked latents %s of %d eligible (density %s, distinct words %s)", selection.ids, selection.eligible,
                     {i: round(d, 4) for i, d in selection.density.items()}, selection.distinct_words)
            sae.extra_cfg["selection"] = {"ids": selection.ids, "eligible": selection.eligible, "tokens": selection.tokens,
                                          "density": selection.density, "distinct_words": selection.distinct_words}
            ids = selection.ids
        heldout_codes = sae_codes(loaded.model, tokenizer, sae, corpus.heldout)
        if config.delphi is not None and config.delphi.write_cache:
            write_delphi_cache(config, loaded, sae, train_codes + heldout_codes)
        features = sae_latent_features(ids, sae, train_codes, heldout_codes, feature.threshold, feature.max_examples,
                                       feature.split_seed, feature.top_n, feature.validation_fraction)
        return features, sae
    counts = token_counts(tokenizer, corpus.train) if corpus else None
    if isinstance(feature, WordsFeatureConfig):
        ids = [str(i) for i in feature.ids]
        return word_list_features(feature.sets, feature.labels, ids, feature.negatives, tokenizer, feature.heldout_fraction,
                                  feature.validation_fraction, feature.split_seed, counts), None
    return category_features(feature.ids, tokenizer, feature.heldout_fraction, feature.validation_fraction, feature.split_seed,
                             counts), None


def delphi_cache_features(config: LabelingConfig, loaded: LoadedModel) -> tuple[list[FeatureData], SparseAutoencoder | None]:
    """`feature=delphi`: the latents of a delphi cache; an SAE beside it (local or SAELens) brings the decoder rows of
    the vocabulary-projection baseline."""
    from gradspace.labeling.delphi_cache import delphi_features

    sae = None
    if isinstance(config.sae, BuiltinSAEConfig):
        raise GradspaceError("feature=delphi reads the SAE beside the cache from its folder: use sae=local sae.path=<folder> "
                             "(the built-in SAE is saved under <paths.cache_dir>/saes/)")
    if config.sae is not None:
        sae = load_local_sae(config.sae.path) if isinstance(config.sae, LocalSAEConfig) else load_saelens_sae(str(config.sae.release), str(config.sae.id))
    vocabulary = max(len(loaded.tokenizer), int(loaded.model.get_input_embeddings().weight.shape[0]))
    features, _ = delphi_features(config.feature, loaded.tokenizer, vocabulary, loaded.name,
                                  word_tokens(loaded.tokenizer, vocabulary, min_letters=1), None if sae is None else sae.W_dec)
    return features, sae


def write_delphi_cache(config: LabelingConfig, loaded: LoadedModel, sae: SparseAutoencoder, codes) -> None:
    """`delphi.write_cache`: the SAE's codes over the corpus (training texts, then held-out texts) as a delphi cache."""
    from gradspace.evaluation.logprobs import prefix_token_id
    from gradspace.labeling.delphi_cache import cache_config, pack_codes, write_cache

    settings = config.delphi
    tokens, locations, activations = pack_codes(codes, settings.cache_ctx_len, prefix_token_id(loaded.tokenizer))
    where = write_cache(settings.write_cache, sae.hook_name, tokens, locations, activations, sae.d_sae, settings.n_splits,
                        cache_config(loaded.path, settings.cache_ctx_len, tokens.numel(), settings.n_splits,
                                     config.feature.corpus_path or "gradspace:english_text"))
    log.info("wrote a delphi latent cache of %d x %d tokens to %s", *tokens.shape, where)


def without_context(feature: FeatureData) -> FeatureData:
    """The feature with every example's context removed: what a readout sees of it from the word alone."""
    strip = lambda examples: [dataclasses.replace(e, context=()) for e in examples]  # noqa: E731
    parts = ("train_positive", "train_negative", "validation_positive", "validation_negative", "heldout_positive", "heldout_negative")
    return dataclasses.replace(feature, **{part: strip(getattr(feature, part)) for part in parts})


def token_text(tokenizer, token_ids) -> str:
    return tokenizer.decode(list(token_ids)).strip()


def train_soft_labels(cfg: DictConfig, config: LabelingConfig, discriminator: Discriminator, allowed: torch.Tensor,
                      features: list[FeatureData], loggers: list) -> tuple[SoftLabel, float]:
    """All features' soft labels trained side by side by the configured Lightning trainer; (module, seconds)."""
    import hydra
    from torch.utils.data import DataLoader

    names = [f.name for f in features]
    start = time.perf_counter()
    seed_tokens = None
    if config.label.seed_prompt is not None:
        predicted = predicted_categories(discriminator.lm, discriminator.builder.tokenizer, features, config.label.seed_prompt,
                                         config.label.seed_words, allowed, config.label.restarts, int(cfg.seed))
        seed_tokens = [token for tokens in predicted for token in tokens]
    module = SoftLabel(discriminator, allowed, names, config.label, hydra.utils.instantiate(config.label.optimizer),
                       total_steps=config.label.steps, seed=int(cfg.seed), seed_tokens=seed_tokens)
    # label.yaml sets the trainer's steps from label.steps and turns checkpoints off; every trainer.* override applies.
    trainer = hydra.utils.instantiate(cfg.trainer, logger=loggers or False,
                                      callbacks=with_step_progress_bar([], cfg.trainer, "soft-label steps"))
    pad_id = discriminator.builder.tokenizer.pad_token_id
    loader = DataLoader(BalancedExamples(features, discriminator.builder, config.label.batch_size, pad_id, int(cfg.seed)),
                        batch_size=None, num_workers=0)
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
    if feature.first_listed_token is not None and bool(allowed[feature.first_listed_token]):
        labels["first_listed"] = (feature.first_listed_token,)
    if feature.decoder_direction is not None:
        projection = vocabulary_projection(unembedding, feature.decoder_direction, allowed, top=10)
        labels["vocabulary_projection"] = (projection[0],)
    return labels, projection


def descent_label(config: LabelingConfig, feature: FeatureData, p: torch.Tensor, visited: list[tuple[int, ...]],
                  scorers: FeatureScorers) -> tuple[tuple[int, ...], float, dict]:
    """The discrete step over one feature's restarts' soft labels `p` [R, L, V] on the validation examples: (the chosen
    label, its validation threshold, the soft label's own result and the selection's record)."""
    tokenizer = scorers.training.discriminator.builder.tokenizer
    limit = config.discrete.max_examples
    selection = scorers.validation
    tie_scorer = scorers.training if config.discrete.tie_objective_words == "train_and_validation" else None
    start = time.perf_counter()
    chosen = select_label(selection, p, config.discrete, visited, tie_scorer)
    selection_seconds = time.perf_counter() - start  # the search's own time; what follows is scored for the record
    # The soft label's own result: the argmax of the restart whose argmax did best on validation, and its top 10.
    argmaxes = [tuple(int(t) for t in p[r].argmax(-1).tolist()) for r in range(p.shape[0])]
    unscored = [ids for ids in dict.fromkeys(argmaxes) if chosen.scores_of(ids) is None]
    validation = {s.label_ids: s for s in chosen.scored} | {s.label_ids: s for s in (selection.score_labels(unscored) if unscored else [])}
    restart = max(range(p.shape[0]), key=lambda r: validation[argmaxes[r]].ranking_key())
    top10 = p[restart, 0].topk(10)
    top10_labels = [(int(t),) + argmaxes[restart][1:] for t in top10.indices]
    held = {ids: scorers.heldout.score_labels([ids], [validation[ids].threshold] if ids in validation else None)[0]
            for ids in dict.fromkeys([argmaxes[restart], *top10_labels])}
    best = chosen.best.label_ids
    token_probs = torch.stack([p[:, position, token] for position, token in enumerate(best)], dim=-1).prod(-1)
    soft_argmax = token_text(tokenizer, argmaxes[restart])
    record = {
        "probability": float(token_probs.max()),
        "soft_label": {
            "restart": restart, "argmax": soft_argmax, "accepted": is_accepted(soft_argmax, feature),
            "heldout_auroc": held[argmaxes[restart]].auroc, "heldout_accuracy": held[argmaxes[restart]].balanced_accuracy,
        },
        "top10": [{"token": token_text(tokenizer, [int(t)]), "probability": float(pr), "heldout_auroc": held[ids].auroc}
                  for pr, t, ids in zip(top10.values, top10.indices, top10_labels)],
        "restart_argmax": [token_text(tokenizer, ids) for ids in argmaxes],
        "selection": {"accuracy": chosen.best.balanced_accuracy, "auroc": chosen.best.auroc, "loss": chosen.best.loss,
                      "naturalness": chosen.best.naturalness, "objective": chosen.best.objective,
                      "n_candidates": len(chosen.scored), "found_by": chosen.found_by[best], "seconds": round(selection_seconds, 3),
                      "top_ranked": token_text(tokenizer, chosen.scored[0].label_ids),
                      "tied": [token_text(tokenizer, ids) for ids in chosen.tied],
                      "tie_objectives": [round(chosen.tie_objectives[ids], 4) for ids in chosen.tied],
                      "tie_aurocs": [round(chosen.tie_aurocs[ids], 4) for ids in chosen.tied],
                      "examples": {"positive": len(feature.validation_positive[:limit]), "negative": len(feature.validation_negative[:limit])},
                      "ranking": [[token_text(tokenizer, s.label_ids), round(s.auroc, 4), round(s.balanced_accuracy, 4)]
                                  for s in chosen.scored[:10]]},
    }
    return best, chosen.best.threshold, record


@dataclass
class FeatureScorers:
    """One feature's hard-label scorers under one discriminator, built once: a scorer keeps its prompts and, where the
    label is only predicted, its table of log q, which every label it scores reuses."""

    training: HardLabelScorer  # the training and validation words, with naturalness: what the descent and the scan minimise
    validation: HardLabelScorer  # with naturalness: the discrete step's ranking, and every label's decision boundary
    heldout: HardLabelScorer  # the held-out words, scored only at the end

    @classmethod
    def build(cls, config: LabelingConfig, feature: FeatureData, discriminator: Discriminator, allowed: torch.Tensor) -> "FeatureScorers":
        limit, heldout_limit = config.discrete.max_examples, config.evaluation.max_examples
        pad_id, kl_weight = discriminator.builder.tokenizer.pad_token_id, config.label.kl_weight
        return cls(
            HardLabelScorer(discriminator, feature.train_positive[:limit] + feature.validation_positive[:limit],
                            feature.train_negative[:limit] + feature.validation_negative[:limit], pad_id, allowed, kl_weight),
            HardLabelScorer(discriminator, feature.validation_positive[:limit], feature.validation_negative[:limit], pad_id,
                            allowed, kl_weight),
            HardLabelScorer(discriminator, feature.heldout_positive[:heldout_limit], feature.heldout_negative[:heldout_limit],
                            pad_id, allowed))

    def heldout_score(self, label: tuple[int, ...]) -> LabelScore:
        """The label on the held-out words, at its decision boundary on the validation words."""
        return self.heldout.score_labels([label], [self.validation.score_labels([label])[0].threshold])[0]


def scan_feasible(config: LabelingConfig, builder: PromptBuilder, allowed: torch.Tensor, feature: FeatureData) -> bool:
    """Whether the exact scan is affordable: a table (the label is only predicted; two-token labels by a beam over
    it), else one forward per (token, training or validation example) within `evaluation.scan_max_items`."""
    if builder.readout == "label_likelihood":
        return True
    limit = config.discrete.max_examples
    examples = sum(len(part[:limit]) for part in (feature.train_positive, feature.validation_positive,
                                                  feature.train_negative, feature.validation_negative))
    return config.label.length == 1 and int(allowed.sum()) * examples <= config.evaluation.scan_max_items


def run_scan(config: LabelingConfig, scorers: FeatureScorers, one_token: FeatureScorers | None
             ) -> tuple[ScanResult, ScanResult | None]:
    """The scan's label on the training and validation words: one-token labels over every allowed token, two-token
    labels by `beam_scan` from the one-token scan's best first tokens (`one_token`: the scorers of one-token labels);
    (the scan, the one-token scan it started from or None)."""
    if one_token is None:
        return vocabulary_scan(scorers.training), None
    single = vocabulary_scan(one_token.training, keep=config.label.scan_beam)
    return beam_scan(scorers.training.discriminator, scorers.training, [ids[0] for ids, _ in single.ranking]), single


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


def resolve_method(config: LabelingConfig, builder: PromptBuilder, feasible: bool) -> str:
    """label.method with auto resolved: the scan where the readout only predicts the label (a table), else the descent."""
    if config.label.method == "auto":
        return "scan" if builder.readout == "label_likelihood" else "descent"
    if config.label.method == "scan" and not feasible:
        raise GradspaceError(f"label.method=scan: this readout reads the label, so the scan costs one forward per token and "
                             f"example, more than evaluation.scan_max_items={config.evaluation.scan_max_items}; use "
                             f"label.method=descent, a smaller label.vocabulary, or raise evaluation.scan_max_items")
    return config.label.method


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


def run(cfg: DictConfig) -> dict:
    config = LabelingConfig.from_config(cfg)  # every labeling section checked before any model is loaded
    seed_everything(int(cfg.seed))
    set_torch_threads(cfg.get("torch_threads"))
    cache_dir = Path(str(cfg.paths.cache_dir)).expanduser()
    loaded = load_model(cfg.model, cache_dir, progress=False)
    tokenizer = loaded.tokenizer
    spec, discriminator, allowed = build_discriminator(config, cfg.model, loaded)
    builder = discriminator.builder
    features, sae = build_features(config, cfg.model, loaded, cache_dir)
    if any(f.train_positive[0].context for f in features) and not builder.uses_context:
        log.info("the prompt has no {context} slot: context-dependent activations are judged from the word alone")
    names = [f.name for f in features]
    # The oracle check first: a feature the readout cannot tell apart with its own name gets no label.
    oracle_start = time.perf_counter()
    oracles = {f.name: oracle_check(discriminator, f, allowed, config.evaluation.max_examples) for f in features}
    # With context in the prompt: the same readout given the word alone, what the context adds.
    word_alone = ({f.name: oracle_check(discriminator, without_context(f), allowed, config.evaluation.max_examples) for f in features}
                  if builder.uses_context else {})
    oracle_seconds = time.perf_counter() - oracle_start
    minimum = config.evaluation.min_oracle_auroc
    trainable = [f for f in features if oracles[f.name] is None or oracles[f.name].score.auroc >= minimum]
    results = {f.name: unlabelled_feature(f, oracles[f.name], minimum) for f in features if f not in trainable}
    for name, result in results.items():
        if word_alone.get(name) is not None:
            result["oracle_word_alone"] = oracle_summary(word_alone[name])
        log.warning("%s: %s", result["feature"], result["note"])
    # The scan is the baseline of every method wherever it is affordable.
    scans = all(scan_feasible(config, builder, allowed, f) for f in trainable)
    method = resolve_method(config, builder, scans)
    one_token = None
    if config.label.length > 1 and scans:
        one_token = Discriminator(loaded.model, PromptBuilder(spec, tokenizer, 1, add_bos=config.prompt.add_bos)).to(loaded.model.device)
    loggers = loggers_from_config(cfg, default_name=f"label-{cfg.model.name}-{'+'.join(names)[:60]}-s{cfg.seed}", tags=["label"])
    descends = method in ("descent", "both")
    # Where the exact scan of every token is not run, a descent is compared with the same scan over frequent words.
    frequent = (frequent_tokens(tokenizer, allowed, config.evaluation.frequent_scan_words)
                if descends and not scans and config.label.length == 1 and config.evaluation.frequent_scan_words else None)
    module, train_seconds = (train_soft_labels(cfg, config, discriminator, allowed, trainable, loggers)
                             if trainable and descends else (None, 0.0))
    scorer = build_scorer(config, cache_dir, loaded) if config.evaluation.scorer_model else None

    restarts = config.label.restarts
    unembedding = loaded.model.get_output_embeddings().weight.detach()
    for index, feature in enumerate(trainable):
        feature_start = time.perf_counter()
        scorers = FeatureScorers.build(config, feature, discriminator, allowed)
        one_token_scorers = None if one_token is None else FeatureScorers.build(config, feature, one_token, allowed)
        scan, single = run_scan(config, scorers, one_token_scorers) if scans else (None, None)
        if descends:
            rows = slice(index * restarts, (index + 1) * restarts)
            with torch.no_grad():
                p_final = module.distribution()[rows].detach()
            visited = [label for label, _ in sum(module.visited[rows], Counter()).most_common()]
            found = descent_label(config, feature, p_final, visited, scorers)
            descent_seconds = train_seconds / len(trainable) + found[2]["selection"]["seconds"]
        else:
            found = (scan.label_ids, scorers.validation.score_labels([scan.label_ids])[0].threshold, scan_record(scan, tokenizer))
        entry = label_feature(config, feature, found, scan, single, "descent" if descends else "scan", scorers, one_token_scorers,
                              allowed, unembedding, oracles[feature.name])
        if descends:  # its share of the soft labels' training and its discrete step's search
            entry["descent_seconds"] = round(descent_seconds, 3)
        if frequent is not None:
            entry["baselines"]["frequent_scan"] = frequent_scan_baseline(vocabulary_scan(scorers.training, tokens=frequent),
                                                                         scorers, feature, tokenizer, len(frequent))
        if word_alone.get(feature.name) is not None:
            entry["oracle_word_alone"] = oracle_summary(word_alone[feature.name])
        if feature.word_alone_auroc is not None:
            entry["word_alone_auroc"] = feature.word_alone_auroc
        if scorer is not None:
            entry["scorer"] = scorer.score(feature, entry["label"], tokenizer)
        # The K features train in one batch: each gets an equal share of the training time.
        entry["wall_seconds"] = train_seconds / len(trainable) + time.perf_counter() - feature_start
        results[feature.name] = entry
        log_feature(feature, entry)
    results = [results[f.name] for f in features]
    delphi = None if config.delphi is None else finish_delphi(config, features, results, scorer, sae, tokenizer, int(cfg.seed),
                                                               Path(str(cfg.paths.output_dir)))

    summary = {
        "model": {"name": loaded.name, "revision": loaded.revision, "path": loaded.path},
        "prompt": {"style": spec.style, "template": spec.template, "answers": None if spec.answers is None else list(spec.answers),
                   "neutral": spec.neutral},
        "sae": None if sae is None else {"hook_name": sae.hook_name, "architecture": sae.architecture, "d_sae": sae.d_sae, **sae.extra_cfg},
        "readout": spec.readout,
        "method": method,
        "scorer": None if scorer is None else scorer.summary(),
        "delphi": delphi,
        "oracle_seconds": oracle_seconds,
        "train_seconds": train_seconds,
        "steps": 0 if module is None else int(module.global_step),
        "features": results,
        "trajectory": [] if module is None else [
            {**point, "top_token": [[token_text(tokenizer, [t]) for t in row] for row in point["top_token"]]}
            for point in module.trajectory[:: max(1, len(module.trajectory) // 50)]],
        "config": loggable_config(cfg),
    }
    write_results(Path(str(cfg.paths.output_dir)), summary)
    if loggers:
        log_results(loggers, results)
    return summary
