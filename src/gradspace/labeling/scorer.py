"""A scorer that is not the optimiser: a second model reads every found label on the same held-out examples through
its own oracle-checked readout (`prompt.style_by_model`), so that a label fitted to one model's quirks shows it.

Examples travel as text: the word (and the context before it) is decoded from the optimiser's tokens and spelled
by the scorer's tokenizer, where it may take several tokens; so does the label."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from gradspace.labeling.config import LabelingConfig
from gradspace.labeling.discrete import HardLabelScorer
from gradspace.labeling.discriminator import Discriminator
from gradspace.labeling.features import FeatureData
from gradspace.labeling.oracle import word_label_ids
from gradspace.labeling.prompts import Example, PromptBuilder, resolve_prompt_spec
from gradspace.labeling.soft_label import allowed_label_tokens
from gradspace.models.loading import LoadedModel, load_model

log = logging.getLogger(__name__)


def respell(example: Example, source_tokenizer, target_tokenizer) -> Example:
    """`example` for another tokenizer: the same word and context text, in the target's tokens."""
    word = example.text(source_tokenizer)
    context_ids = [t for t in example.context if t not in source_tokenizer.all_special_ids]
    context = source_tokenizer.decode(context_ids).strip() if context_ids else ""
    ids = target_tokenizer.encode(" " + word, add_special_tokens=False) or target_tokenizer.encode(word, add_special_tokens=False)
    return Example(ids[0], tuple(target_tokenizer.encode(context, add_special_tokens=False)) if context else (), word)


class SecondModelScorer:
    def __init__(self, config: LabelingConfig, loaded: LoadedModel):
        self.config = config
        self.loaded = loaded
        model_cfg = config.evaluation.scorer_model
        self.spec = resolve_prompt_spec(config.prompt, loaded.tokenizer, str(model_cfg.get("source", "hf")), str(model_cfg["name"]))
        self._discriminators: dict[int, Discriminator] = {}
        vocabulary = int(loaded.model.get_input_embeddings().weight.shape[0])
        self.allowed = allowed_label_tokens(loaded.tokenizer, self.discriminator(1).builder, vocabulary, "all")

    def discriminator(self, length: int) -> Discriminator:
        """The scorer's discriminator for labels of `length` tokens (a label may spell longer in its vocabulary)."""
        if length not in self._discriminators:
            builder = PromptBuilder(self.spec, self.loaded.tokenizer, length, add_bos=self.config.prompt.add_bos)
            self._discriminators[length] = Discriminator(self.loaded.model, builder).to(self.loaded.model.device)
        return self._discriminators[length]

    def _auroc(self, word: str, positives: list[Example], negatives: list[Example]) -> float | None:
        ids = word_label_ids(self.discriminator(1).builder, word)
        if not ids:
            return None
        discriminator = self.discriminator(len(ids))
        scorer = HardLabelScorer(discriminator, positives, negatives, self.loaded.tokenizer.pad_token_id, self.allowed)
        return scorer.score_labels([ids])[0].auroc

    @torch.no_grad()
    def score(self, feature: FeatureData, label: str, source_tokenizer) -> dict:
        """The label's held-out AUROC under the scorer's readout, beside the scorer's own oracle (the category word)."""
        limit = self.config.evaluation.max_examples
        tokenizer = self.loaded.tokenizer
        positives = [respell(e, source_tokenizer, tokenizer) for e in feature.heldout_positive[:limit]]
        negatives = [respell(e, source_tokenizer, tokenizer) for e in feature.heldout_negative[:limit]]
        return {"model": self.loaded.name, "style": self.spec.style, "label": label,
                "heldout_auroc": self._auroc(label, positives, negatives),
                "oracle_auroc": self._auroc(feature.label_words[0], positives, negatives) if feature.label_words else None}

    def summary(self) -> dict:
        return {"model": self.loaded.name, "path": self.loaded.path, "style": self.spec.style, "template": self.spec.template}


def build_scorer(config: LabelingConfig, cache_dir: Path, optimiser: LoadedModel) -> SecondModelScorer:
    loaded = load_model(config.evaluation.scorer_model, cache_dir, device=optimiser.model.device, progress=False)
    if loaded.path == optimiser.path:
        log.warning("evaluation.scorer_model is the optimiser's own model (%s): its scores are no independent check", loaded.path)
    return SecondModelScorer(config, loaded)
