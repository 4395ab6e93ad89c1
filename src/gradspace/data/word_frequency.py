"""How often words occur in English, offline: the frequency lists of the `wordfreq` package (Speer et al., drawn from
Wikipedia, subtitles, news, books, web text and social media; code Apache-2.0, data CC BY-SA 4.0). A word list with
no corpus of its own ranks its words by them for the most-frequent-token baseline."""

from __future__ import annotations

from typing import Sequence

from gradspace.errors import GradspaceError

INSTALL = "pip install wordfreq"


def english_frequencies(words: Sequence[str]) -> list[float]:
    """Each word's frequency in English (a share of all word occurrences; 0 for words wordfreq does not list)."""
    try:
        from wordfreq import word_frequency  # an optional package (the real extra): asked for only here
    except ImportError:
        raise GradspaceError(
            f"a word list without feature.corpus_path ranks its words by English frequency for its most-frequent-token "
            f"baseline, which needs the wordfreq package: {INSTALL} (part of gradspace[real]), or set "
            f"feature.corpus_path=<text file, one text per line> to count the words there"
        ) from None
    return [word_frequency(str(word), "en") for word in words]
