"""Features to label, as positive and negative example tokens split into train and held-out parts.

Three kinds: a word list (`kind: words`, any list per feature name), a category of the synthetic world
(`kind: category`, its singular words against the other categories' singular words), and an SAE latent (`kind: sae`: token
occurrences in a corpus whose latent activation exceeds a threshold against those where it does not).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torchmetrics.functional.classification import binary_auroc

from gradspace.data.english_text import english_sentences
from gradspace.data.word_frequency import english_frequencies
from gradspace.errors import GradspaceError
from gradspace.labeling.activations import token_activations
from gradspace.labeling.config import FeatureConfig, SAEFeatureConfig
from gradspace.labeling.prompts import Example, word_token_id
from gradspace.labeling.sae import SparseAutoencoder
from gradspace.labeling.vocabulary import word_tokens
from gradspace.synth.grammar import CATEGORIES, NOUNS
from gradspace.synth.world import WorldConfig, load_or_build_world


@dataclass
class FeatureData:
    """A feature's examples in three parts: the soft label trains on `train_*`, the discrete step ranks candidate
    labels on `validation_*`, and `heldout_*` stay untouched until the chosen label is scored."""

    name: str
    train_positive: list[Example]
    train_negative: list[Example]
    heldout_positive: list[Example]
    heldout_negative: list[Example]
    validation_positive: list[Example] = field(default_factory=list)
    validation_negative: list[Example] = field(default_factory=list)
    # The category word (the oracle's hand-given label) and the synonyms and hypernyms that count as it, if written down
    label_words: list[str] = field(default_factory=list)
    # The "most frequent top-activating token" baseline's tokens: an SAE latent's strongest occurrences (repeated by
    # frequency), a word list's words (ranked by frequency).
    top_activating_tokens: list[int] = field(default_factory=list)
    # Word lists: the list's first word, the category's prototype as its author wrote it (a second baseline)
    first_listed_token: int | None = None
    decoder_direction: torch.Tensor | None = None  # SAE latents: the latent's decoder row
    # SAE latents: how much of the firing the word alone explains, as the held-out AUROC of each token's firing rate
    # on the training texts (1.0: the token decides; 0.5: the token says nothing, the context does)
    word_alone_auroc: float | None = None
    # delphi caches: the latent's windows (gradspace.labeling.delphi_cache.LatentWindows), which delphi's scoring reads
    windows: object | None = None

    def check(self) -> None:
        parts = ("train_positive", "train_negative", "validation_positive", "validation_negative", "heldout_positive", "heldout_negative")
        empty = [part for part in parts if not getattr(self, part)]
        if empty:
            raise GradspaceError(
                f"feature '{self.name}' has no {', '.join(empty)} examples; give it more words (or a larger corpus, "
                f"or a lower feature.threshold for SAE latents)"
            )


@dataclass
class Corpus:
    train: list[str]
    heldout: list[str]


def load_corpus(feature: FeatureConfig, model_cfg: Mapping, cache_dir) -> Corpus | None:
    """Texts to find feature activations and word frequencies in: `feature.corpus_path` (one text per line), else the
    synthetic world's corpora for synthetic models, else for SAE latents of a real LM real English text (the
    Wikipedia sample of `gradspace.data.english_text`). In a text file the last `heldout_fraction` of lines are held
    out (whole articles of the Wikipedia sample)."""
    if feature.corpus_path:
        file = Path(str(feature.corpus_path)).expanduser()
        if not file.is_file():
            raise GradspaceError(f"feature.corpus_path={file} does not exist; point it at a text file with one text per line")
        try:
            text = file.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows editors) is no part of the text
        except UnicodeDecodeError as err:
            raise GradspaceError(f"feature.corpus_path={file} is not UTF-8 text ({err.reason} at byte {err.start}); "
                                 f"save it as UTF-8") from None
        return _held_out_tail([line.strip() for line in text.splitlines() if line.strip()], feature)
    if model_cfg.get("source") == "synth":
        world = load_or_build_world(WorldConfig(**dict(model_cfg.get("world") or {})), cache_dir)
        return Corpus(world.train_corpus[: feature.max_texts], world.heldout_corpus[: feature.max_texts])
    if isinstance(feature, SAEFeatureConfig):
        return _held_out_tail(english_sentences(cache_dir), feature)
    return None


def _held_out_tail(lines: list[str], feature: FeatureConfig) -> Corpus:
    cut = max(1, int(len(lines) * (1 - feature.heldout_fraction)))
    corpus = Corpus(lines[:cut][: feature.max_texts], lines[cut:][: feature.max_texts])
    # Counting words in no text ended in an IndexError from the tokenizer.
    if not corpus.train:
        raise GradspaceError(f"the corpus leaves no text to count words in ({len(lines)} non-empty lines, "
                             f"feature.max_texts={feature.max_texts}); give feature.corpus_path=<text file> with text "
                             f"and feature.max_texts >= 1")
    return corpus


def _split(items: list, fraction: float, rng: random.Random) -> tuple[list, list]:
    items = list(items)
    rng.shuffle(items)
    n_heldout = min(len(items) - 1, max(1, round(len(items) * fraction))) if len(items) > 1 else 0
    return items[n_heldout:], items[:n_heldout]


def token_counts(tokenizer, texts: Sequence[str]) -> Counter:
    counts: Counter = Counter()
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        counts.update(ids)
    return counts


def split_three(items: list, heldout_fraction: float, validation_fraction: float, rng: random.Random) -> tuple[list, list, list]:
    """(train, validation, held-out): `heldout_fraction` of the items held out, `validation_fraction` of the rest validation."""
    rest, heldout = _split(items, heldout_fraction, rng)
    train, validation = _split(rest, validation_fraction, rng)
    return train, validation, heldout


def word_set_features(
    lists: Sequence[tuple[str, Sequence[str], Sequence[str]]], negative_tokens: Sequence[int], tokenizer,
    heldout_fraction: float, validation_fraction: float, seed: int, frequency: Mapping[int, float], max_negatives: int = 2000,
) -> list[FeatureData]:
    """One feature per (name, words, label_words): positives are the words of its list that are single tokens,
    negatives are `negative_tokens` minus them. The negatives are sampled and split once for all features, so a
    word is a training, validation or held-out negative for every feature alike, and one draw of training
    negatives can serve every feature of a batch (BalancedExamples). `frequency` (per token) ranks each list's
    words for the most-frequent-token baseline (ties: the earlier word of the list), which takes the first of them
    that may be a label: the most frequent of "can, case, box" is a stop word."""
    rng = random.Random(f"{seed}:negatives")
    negative = list(dict.fromkeys(negative_tokens))
    if len(negative) > max_negatives:
        negative = rng.sample(negative, max_negatives)
    negative_parts = split_three(negative, heldout_fraction, validation_fraction, rng)
    examples = lambda tokens: [Example(t) for t in tokens]  # noqa: E731
    features = []
    special = set(tokenizer.all_special_ids)
    for name, words, label_words in lists:
        specials = [str(w) for w in words if word_token_id(tokenizer, str(w)) in special or str(w) in tokenizer.all_special_tokens]
        if specials:
            raise GradspaceError(f"feature '{name}': {specials} are special tokens of this tokenizer, not words; remove them "
                                 f"from its word list")
        positive = list(dict.fromkeys(t for t in (word_token_id(tokenizer, str(w)) for w in words) if t is not None))
        if not positive:
            raise GradspaceError(
                f"feature '{name}': none of its words {list(words)[:8]} is a single token of this model's vocabulary; "
                f"give words the tokenizer knows as one token"
            )
        positive_set = set(positive)
        train_pos, validation_pos, heldout_pos = split_three(positive, heldout_fraction, validation_fraction, random.Random(f"{seed}:{name}"))
        train_neg, validation_neg, heldout_neg = ([t for t in part if t not in positive_set] for part in negative_parts)
        ranked = sorted(positive, key=lambda t: -frequency.get(t, 0))
        feature = FeatureData(
            name=name,
            train_positive=examples(train_pos), train_negative=examples(train_neg),
            heldout_positive=examples(heldout_pos), heldout_negative=examples(heldout_neg),
            validation_positive=examples(validation_pos), validation_negative=examples(validation_neg),
            top_activating_tokens=ranked, first_listed_token=positive[0], label_words=[str(w) for w in label_words],
        )
        feature.check()
        features.append(feature)
    return features


def singular_category_words() -> dict[str, tuple[str, ...]]:
    """Each category's singular nouns and numerals: the words a question with a singular category label can ask
    about ("is a robin a bird ?"); "is a robins a bird ?" is no sentence, and "are robins birds ?" needs a
    plural label."""
    plurals = {noun.plural for noun in NOUNS} - {noun.singular for noun in NOUNS}
    return {name: tuple(w for w in words if w not in plurals) for name, words in CATEGORIES.items()}


def category_features(ids: Sequence[str], tokenizer, heldout_fraction: float, validation_fraction: float, seed: int,
                      counts: Counter | None) -> list[FeatureData]:
    """Synthetic-world categories: each category's singular words against the singular words of all categories
    it does not contain."""
    categories = singular_category_words()
    unknown = [name for name in ids if name not in categories]
    if unknown:
        raise GradspaceError(f"feature.ids {unknown} are not categories of the synthetic world; choose from {', '.join(categories)}")
    # Every category's words are candidates; each category's own are taken out of its negatives.
    negative_tokens = [t for t in (word_token_id(tokenizer, w) for words in categories.values() for w in words) if t is not None]
    return word_set_features([(name, categories[name], [name]) for name in ids], negative_tokens, tokenizer, heldout_fraction,
                             validation_fraction, seed, counts or Counter())


# Inactive examples of a word list without feature.negatives: the vocabulary's words as labels may be (no fragments)
NEGATIVE_MIN_LETTERS = 3


def word_list_features(sets: Mapping[str, Sequence[str]], labels: Mapping[str, Sequence[str]], ids: Sequence[str],
                       negatives: Sequence[str] | None, tokenizer, heldout_fraction: float, validation_fraction: float, seed: int,
                       counts: Counter | None) -> list[FeatureData]:
    """Word-list features; `counts` (token counts of a corpus) rank each list's words for the most-frequent-token
    baseline, and without a corpus their frequency in English does (gradspace.data.word_frequency)."""
    unknown = [name for name in ids if name not in sets]
    if unknown:
        raise GradspaceError(f"feature.ids {unknown} are not in feature.sets ({', '.join(sets)}); add their word lists")
    if negatives:
        negative_tokens = [t for t in (word_token_id(tokenizer, str(w)) for w in negatives) if t is not None]
    else:
        words = word_tokens(tokenizer, len(tokenizer), NEGATIVE_MIN_LETTERS, stop_words=False)
        negative_tokens = words.nonzero().flatten().tolist()
    frequency = counts if counts is not None else english_token_frequencies(tokenizer, [str(w) for name in ids for w in sets[name]])
    return word_set_features([(name, sets[name], (labels or {}).get(name, ())) for name in ids], negative_tokens, tokenizer,
                             heldout_fraction, validation_fraction, seed, frequency)


def english_token_frequencies(tokenizer, words: Sequence[str]) -> dict[int, float]:
    """{token: frequency in English} of the words that are single tokens (words sharing a token: the larger)."""
    frequency: dict[int, float] = {}
    for word, share in zip(words, english_frequencies(words)):
        token = word_token_id(tokenizer, word)
        if token is not None:
            frequency[token] = max(frequency.get(token, 0.0), share)
    return frequency


# One text's token ids and its SAE codes [n_tokens, d_sae], sparse (a top-k SAE has k nonzero codes a token)
TextCodes = tuple[list[int], torch.Tensor]


@torch.no_grad()
def sae_codes(lm, tokenizer, sae: SparseAutoencoder, texts: Sequence[str]) -> list[TextCodes]:
    """Per text: its token ids and the SAE's codes at its hook point, read in one pass that the latent rule and the
    latents' examples then share (each forward pass of a real LM over the corpus takes minutes on a CPU)."""
    device = sae.W_dec.device
    return [(ids, sae.encode(acts.to(device)).cpu().to_sparse())
            for ids, acts in token_activations(lm, tokenizer, texts, sae.hook_name)]


def latent_columns(codes: Sequence[TextCodes], latents: Sequence[int]) -> list[tuple[list[int], torch.Tensor]]:
    """Per text: (token ids, activations [n_tokens, len(latents)] of `latents`, dense)."""
    index = torch.tensor(list(latents), dtype=torch.long)
    return [(ids, text_codes.index_select(1, index).to_dense()) for ids, text_codes in codes]


@dataclass
class LatentSelection:
    """The latents the rule picked, and what it saw: per picked latent its density and distinct words."""

    ids: list[int]
    eligible: int
    tokens: int
    density: dict[int, float]
    distinct_words: dict[int, int]


class LatentFirings:
    """Per latent, over streamed token batches: how often it fires, how often on a whole-word token, and on which
    distinct words."""

    def __init__(self, d_sae: int, words: torch.Tensor):
        self.words = words  # [V] bool: the whole-word tokens
        self.firings = torch.zeros(d_sae, dtype=torch.long)
        self.word_firings = torch.zeros(d_sae, dtype=torch.long)
        self.tokens = 0
        self._pairs: list[torch.Tensor] = []  # latent * V + token for each (latent, word) seen firing

    def add(self, fired: torch.Tensor, tokens: torch.Tensor) -> None:
        """`fired` [n, d_sae] bool for the `tokens` [n]."""
        is_word = self.words[tokens]
        self.tokens += len(tokens)
        self.firings += fired.sum(0)
        self.word_firings += fired[is_word].sum(0)
        position, latent = fired[is_word].nonzero(as_tuple=True)
        self._pairs.append((latent * len(self.words) + tokens[is_word][position]).unique())

    def distinct_words(self) -> torch.Tensor:
        if not self._pairs:
            return torch.zeros_like(self.firings)
        return torch.bincount(torch.cat(self._pairs).unique() // len(self.words), minlength=len(self.firings))

    def pick(self, count: int, density: Sequence[float], word_share: float, min_words: int) -> LatentSelection:
        """The rule: density within [low, high], `word_share` of the firings on words, `min_words` distinct words;
        `count` of the eligible at evenly spaced ranks of density, rarest to commonest."""
        share = self.firings.double() / max(1, self.tokens)
        distinct = self.distinct_words()
        eligible = ((share >= density[0]) & (share <= density[1]) & (self.firings > 0)
                    & (self.word_firings >= word_share * self.firings) & (distinct >= min_words)).nonzero().flatten()
        if len(eligible) < count:
            raise GradspaceError(f"only {len(eligible)} SAE latents meet the selection rule on {self.tokens} tokens, fewer than "
                                 f"feature.select_count={count}; lower select_count or widen select_density, select_word_share, "
                                 f"select_min_words")
        by_density = eligible[share[eligible].argsort(stable=True)]
        picks = by_density[torch.linspace(0, len(by_density) - 1, count).round().long()].tolist()
        return LatentSelection(picks, len(eligible), self.tokens, {i: float(share[i]) for i in picks},
                               {i: int(distinct[i]) for i in picks})


def select_latents(codes: Sequence[TextCodes], words: torch.Tensor, count: int, threshold: float, density: Sequence[float],
                   word_share: float, min_words: int) -> LatentSelection:
    """The written rule of conf/feature/sae_latent.yaml over the texts' `codes` (`LatentFirings.pick`); a latent
    fires where its activation exceeds `threshold`; `words` [V] marks the whole-word tokens."""
    firings = LatentFirings(codes[0][1].shape[1], words)
    for ids, text_codes in codes:
        firings.add(text_codes.to_dense() > threshold, torch.tensor(ids, dtype=torch.long))
    return firings.pick(count, density, word_share, min_words)


def word_alone_auroc(fired_on: Counter, seen: Counter, positive: Sequence[Example], negative: Sequence[Example]) -> float | None:
    """The held-out AUROC of predicting the latent from the token alone: each token's firing rate on the training
    texts (a token never seen there: the overall rate)."""
    if not positive or not negative:
        return None
    overall = sum(fired_on.values()) / max(1, sum(seen.values()))
    rate = lambda token: fired_on[token] / seen[token] if seen[token] else overall  # noqa: E731
    scores = torch.tensor([rate(e.token) for e in [*positive, *negative]], dtype=torch.float64)
    return float(binary_auroc(scores, torch.tensor([1] * len(positive) + [0] * len(negative))))


def sae_latent_features(ids: Sequence[int], sae: SparseAutoencoder, train_codes: Sequence[TextCodes],
                        heldout_codes: Sequence[TextCodes], threshold: float, max_examples: int, seed: int, top_n: int = 20,
                        validation_fraction: float = 0.25) -> list[FeatureData]:
    """Each latent: token occurrences (with the text before them) where it fires above `threshold` vs. where it
    does not, in the training texts' codes (split into train and validation) and the held-out texts' codes."""
    latents = [int(i) for i in ids]
    bad = [i for i in latents if not 0 <= i < sae.d_sae]
    if bad:
        raise GradspaceError(f"SAE latent ids {bad} are out of range; this SAE has {sae.d_sae} latents (0..{sae.d_sae - 1})")
    splits = {part: latent_columns(codes, latents) for part, codes in (("train", train_codes), ("heldout", heldout_codes))}
    features = []
    for column, latent in enumerate(latents):
        rng = random.Random(f"{seed}:latent{latent}")
        parts: dict[str, tuple[list[Example], list[Example]]] = {}
        strongest: list[tuple[float, int]] = []
        fired_on, seen = Counter(), Counter()  # per token, on the training texts: firings and occurrences
        for part, texts in splits.items():
            positive, negative = [], []
            for ids, acts in texts:
                for position, token in enumerate(ids):
                    value = float(acts[position, column])
                    example = Example(token, tuple(ids[:position]))
                    (positive if value > threshold else negative).append(example)
                    if part == "train":
                        seen[token] += 1
                        if value > threshold:
                            strongest.append((value, token))
                            fired_on[token] += 1
            parts[part] = (rng.sample(positive, min(len(positive), max_examples)), rng.sample(negative, min(len(negative), max_examples)))
        if not parts["train"][0]:
            raise GradspaceError(
                f"SAE latent {latent} never fires above feature.threshold={threshold} on the corpus; pick another latent id"
            )
        strongest.sort(key=lambda pair: -pair[0])
        (train_pos, validation_pos), (train_neg, validation_neg) = (_split(examples, validation_fraction, rng) for examples in parts["train"])
        feature = FeatureData(
            name=f"latent{latent}",
            train_positive=train_pos, train_negative=train_neg,
            validation_positive=validation_pos, validation_negative=validation_neg,
            heldout_positive=parts["heldout"][0], heldout_negative=parts["heldout"][1],
            top_activating_tokens=[token for _, token in strongest[:top_n]],
            decoder_direction=sae.W_dec[latent].detach().float().cpu(),
            word_alone_auroc=word_alone_auroc(fired_on, seen, *parts["heldout"]),
        )
        feature.check()
        features.append(feature)
    return features
