"""Indefinite articles for the prompt's `{article}` (the word's) and `{label_article}` (the label's) slots.

The synthetic world has its own rule (no article before a numeral, its grammar's a/an); a real vocabulary gets
the article its spelling suggests. Which one a prompt uses follows its style: only synthetic prompts speak the
synthetic language.
"""

from __future__ import annotations

from typing import Callable

from gradspace.synth.grammar import DIGITS, NUMBER_WORDS, realize


def synthetic_article(word: str) -> str:
    """The article the synthetic corpus writes before `word` in a category question: none before a numeral
    ("is seven a number ?"), "an" where its grammar writes it ("is an eagle a bird ?"), "a" otherwise."""
    if word in NUMBER_WORDS or word in DIGITS:
        return ""
    return realize(["a", word]).split()[0]


def spelled_article(word: str) -> str:
    """The article English spelling suggests: none before a numeral written in digits, "an" before a vowel letter,
    "a" otherwise (an approximation: "a unicorn", "an hour" go the other way)."""
    if word[:1].isdigit():
        return ""
    return "an" if word[:1].lower() in "aeiou" else "a"


def article_rule(style: str) -> Callable[[str], str]:
    return synthetic_article if style == "synth" else spelled_article
