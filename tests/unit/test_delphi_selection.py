"""The written rule that picks latents of a delphi cache (delphi_cache.WindowRule): on the strongest token of each
window where a latent fires, a class of content words is eligible; one word, function words, word fragments and
latents too rare to draw from are not (no model: a word-level tokenizer and a cache built in memory)."""

import logging
from pathlib import Path

import pytest
import torch

from gradspace.errors import GradspaceError
from gradspace.labeling.delphi_cache import (
    DelphiCache,
    LatentActivations,
    WindowRule,
    select_cached_latents,
    strongest_tokens,
)
from gradspace.synth.tokenizer import build_word_tokenizer

pytestmark = pytest.mark.unit

WINDOW, SEQUENCE, SEQUENCES = 32, 64, 20
FILLER = ["the", "of", "and"]
CLASS = ["river", "sea", "lake", "valley", "island"]  # one latent's strongest words: a class a label can name
FRAGMENTS = ["ab", "cd", "ef", "gh", "ij"]  # too short to be words
CLASS_AT, STUDY_AT, THE_AT, FRAGMENT_AT = 5, 37, 10, 42
RULE = WindowRule(density=[0.0, 1.0], max_top_share=0.3, max_common_share=0.2, common_tokens=3, min_word_share=0.8)
NEED = 10


@pytest.fixture(scope="module")
def tokenizer():
    return build_word_tokenizer([*FILLER, *CLASS, *FRAGMENTS, "study"])


def cache_with(tokenizer, firings: dict[int, list[tuple[int, int, float]]]) -> DelphiCache:
    """SEQUENCES texts of filler with a class word, 'study' and a fragment at fixed places; `firings` per latent:
    (sequence, position, activation)."""
    rows = []
    for s in range(SEQUENCES):
        words = [FILLER[i % 3] for i in range(SEQUENCE)]
        words[CLASS_AT], words[STUDY_AT], words[FRAGMENT_AT] = CLASS[s % 5], "study", FRAGMENTS[s % 5]
        rows.append(tokenizer.convert_tokens_to_ids(words))
    latents = {latent: LatentActivations(torch.tensor([s * SEQUENCE + p for s, p, _ in fired]),
                                         torch.tensor([a for _, _, a in fired], dtype=torch.float32))
               for latent, fired in firings.items()}
    return DelphiCache(Path("cache"), "blocks.0.hook_resid_post", torch.tensor(rows), {}, len(latents), latents)


def every_text(position: int) -> list[tuple[int, int, float]]:
    return [(s, position, 1.0) for s in range(SEQUENCES)]


def test_only_a_class_of_content_words_is_eligible(tokenizer, caplog):
    cache = cache_with(tokenizer, {
        0: every_text(CLASS_AT),  # five words, a fifth of the windows each: eligible
        1: every_text(STUDY_AT),  # one word
        2: every_text(THE_AT),  # the commonest token of the cache
        3: every_text(FRAGMENT_AT),  # not words
        4: every_text(CLASS_AT)[:3],  # fewer windows than NEED
    })
    with caplog.at_level(logging.INFO, logger="gradspace.labeling.delphi_cache"):
        assert select_cached_latents(cache, 1, RULE, WINDOW, NEED, tokenizer, len(tokenizer)) == [0]
    assert "feature.select_count=1: the rule picks latents [0] of the 1 eligible in cache" in caplog.text
    with pytest.raises(GradspaceError, match="only 1 latents .* meet the selection rule"):
        select_cached_latents(cache, 2, RULE, WINDOW, NEED, tokenizer, len(tokenizer))


def test_the_rule_reads_the_strongest_token_of_each_window(tokenizer):
    """'study' fires weakly beside each class word in the same window: the class word is what the rule reads."""
    beside = [(s, CLASS_AT + 1 + s % 3, 0.5) for s in range(SEQUENCES)]
    cache = cache_with(tokenizer, {0: every_text(CLASS_AT) + beside})
    assert select_cached_latents(cache, 1, RULE, WINDOW, NEED, tokenizer, len(tokenizer)) == [0]
    strongest = strongest_tokens(cache, 0, WINDOW)
    assert tokenizer.convert_ids_to_tokens(strongest.tolist()) == [CLASS[s % 5] for s in range(SEQUENCES)]


def test_a_tie_is_read_at_its_first_position(tokenizer):
    """As Window.peak reads an activating window's example token."""
    tied = [(s, p, 1.0) for s in range(SEQUENCES) for p in (CLASS_AT, THE_AT)]
    assert strongest_tokens(cache_with(tokenizer, {0: tied}), 0, WINDOW).tolist() == \
        tokenizer.convert_tokens_to_ids([CLASS[s % 5] for s in range(SEQUENCES)])


def test_latents_are_taken_at_evenly_spaced_ranks_of_density(tokenizer):
    """Three eligible latents of rising density, two picks: the rarest and the commonest."""
    rare = every_text(CLASS_AT)[: NEED]
    cache = cache_with(tokenizer, {7: rare, 8: every_text(CLASS_AT)[: NEED + 5], 9: every_text(CLASS_AT)})
    assert select_cached_latents(cache, 2, RULE, WINDOW, NEED, tokenizer, len(tokenizer)) == [7, 9]
