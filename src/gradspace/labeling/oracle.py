"""The oracle check: can the discriminator tell a feature apart at all? The category word, given by hand as the
label, is scored on the held-out examples like any found label. A readout whose oracle AUROC is near chance cannot
serve the feature, whatever the optimiser finds; its label would mean nothing, so none is reported."""

from __future__ import annotations

from dataclasses import dataclass

from gradspace.labeling.discrete import HardLabelScorer, LabelScore
from gradspace.labeling.discriminator import Discriminator
from gradspace.labeling.features import FeatureData
from gradspace.labeling.prompts import PromptBuilder


@dataclass
class OracleResult:
    label: str  # the category word
    label_ids: tuple[int, ...]
    score: LabelScore  # on the held-out examples


def word_label_ids(builder: PromptBuilder, word: str) -> tuple[int, ...]:
    """`word` as the label slot spells it (with the template's space before it): one or more tokens."""
    return tuple(builder.spell(word, "label"))


def is_accepted(label: str, feature: FeatureData) -> bool | None:
    """Whether `label` is the feature's category word or a written-down synonym/hypernym (None: none written down)."""
    if not feature.label_words:
        return None
    return label.strip().lower() in {word.lower() for word in feature.label_words}


def oracle_check(discriminator: Discriminator, feature: FeatureData, allowed, max_examples: int) -> OracleResult | None:
    """The category word's held-out score, at the word's own token length; None where no word is written down or
    the vocabulary cannot spell it."""
    if not feature.label_words:
        return None
    builder = discriminator.builder
    word = feature.label_words[0]
    ids = word_label_ids(builder, word)
    if not ids or builder.tokenizer.unk_token_id in ids:
        return None
    if len(ids) != builder.label_length:
        builder = PromptBuilder(builder.spec, builder.tokenizer, len(ids), add_bos=bool(builder.start_ids))
        discriminator = Discriminator(discriminator.lm, builder).to(discriminator.embedding.device)
    scorer = HardLabelScorer(discriminator, feature.heldout_positive[:max_examples], feature.heldout_negative[:max_examples],
                             builder.tokenizer.pad_token_id, allowed)
    (score,) = scorer.score_labels([ids])
    return OracleResult(word, ids, score)
