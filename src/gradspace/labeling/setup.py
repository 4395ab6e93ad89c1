"""The run's inputs: the model's discriminator and the tokens a label may use, the features (word lists, activation
records, SAE latents, a delphi cache) and the SAE behind them."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from gradspace.errors import GradspaceError
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
from gradspace.labeling.delphi_cache import cache_config, delphi_features, pack_codes, write_cache
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
from gradspace.labeling.prompts import PromptBuilder, PromptSpec, resolve_prompt_spec
from gradspace.labeling.records import record_features
from gradspace.labeling.sae import SparseAutoencoder, load_local_sae, load_saelens_sae
from gradspace.labeling.sae_training import ensure_builtin_sae
from gradspace.labeling.soft_label import allowed_label_tokens
from gradspace.labeling.vocabulary import word_tokens
from gradspace.models.hooks import resolve_hook
from gradspace.models.loading import LoadedModel
from gradspace.models.prefix_token import prefix_token_id

log = logging.getLogger(__name__)


def load_sae(config: BuiltinSAEConfig | LocalSAEConfig | SAELensConfig, loaded: LoadedModel, corpus: Corpus,
             cache_dir: Path) -> SparseAutoencoder:
    if isinstance(config, BuiltinSAEConfig):
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
    sae = None
    if isinstance(config.sae, BuiltinSAEConfig):
        raise GradspaceError("feature=delphi reads the SAE beside the cache from its folder: use sae=local sae.path=<folder> "
                             "(the built-in SAE is saved under <paths.cache_dir>/saes/)")
    if config.sae is not None:
        sae = load_local_sae(config.sae.path) if isinstance(config.sae, LocalSAEConfig) else load_saelens_sae(str(config.sae.release), str(config.sae.id))
    vocabulary = max(len(loaded.tokenizer), int(loaded.model.get_input_embeddings().weight.shape[0]))
    features, _ = delphi_features(config.feature, loaded.tokenizer, vocabulary, loaded.name,
                                  None if sae is None else sae.W_dec)
    return features, sae

def write_delphi_cache(config: LabelingConfig, loaded: LoadedModel, sae: SparseAutoencoder, codes) -> None:
    """`delphi.write_cache`: the SAE's codes over the corpus (training texts, then held-out texts) as a delphi cache."""
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
