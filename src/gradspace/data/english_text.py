"""Real English text offline: the sentences of the Wikipedia sample that the `gensim` package ships with its tests
(`enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2`: the first ~100 articles of an English
Wikipedia dump, "Anarchism", "Autism", "Albedo", ..., CC BY-SA), for SAE training and feature activations on real LMs.

Only that data file is read; gensim itself is never imported (its modules need scipy), so it is installed with
`pip install --no-deps gensim`. The article text is stripped of wiki markup and cut into prose sentences, once, into
a cached text file (one sentence per line, in article order).
"""

from __future__ import annotations

import bz2
import html
import importlib.util
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from gradspace.errors import GradspaceError
from gradspace.utils.cache import build_once

WIKIPEDIA_SAMPLE = "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
INSTALL = "pip install --no-deps gensim"
SENTENCES_FILE = "sentences.txt"

_INNERMOST_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
_INNERMOST_TABLE = re.compile(r"\{\|(?:(?!\{\|).)*?\|\}", re.DOTALL)
_INNERMOST_LINK = re.compile(r"\[\[([^\[\]]*)\]\]")
_EXTERNAL_LINK = re.compile(r"\[(?:https?|ftp)://[^\s\]]+\s*([^\]]*)\]")
_REF = re.compile(r"<ref[^>/]*?/>|<ref[^>]*?>.*?</ref>", re.DOTALL | re.IGNORECASE)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_TAG = re.compile(r"<[^>]+>")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
# Prose: starts with a capital letter, ends with a full stop, plain ASCII words and punctuation only.
_PROSE = re.compile(r"[A-Z][A-Za-z0-9 ,;:'()\-.%$]*[a-z0-9)]\.")
# A template stands in for words ("known as {{lang|sq|Shqipëria}} in"): where one was removed from a sentence, the
# sentence goes too. Removed references and files leave other traces: "known as ' and", "the () of", "word ,".
_TEMPLATE_MARK = "\x00"
_REMOVAL_TRACES = (_TEMPLATE_MARK, "()", " ' ", "( ", " )", " ,", " .", " ;", " :")


def wikipedia_sample_file() -> Path:
    """The bz2 XML file inside the installed gensim package; a one-line error with the install command without it."""
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise GradspaceError(f"real English text (SAE latents on a real LM) comes from the gensim package's Wikipedia sample; "
                             f"install it with: {INSTALL} (or give feature.corpus_path=<text file, one text per line>)")
    path = Path(next(iter(spec.submodule_search_locations))) / WIKIPEDIA_SAMPLE
    if not path.is_file():
        raise GradspaceError(f"the installed gensim has no {WIKIPEDIA_SAMPLE}; reinstall it with: {INSTALL}")
    return path


def _replace_until_stable(pattern: re.Pattern, replacement, text: str) -> str:
    """Nested markup ({{a {{b}} c}}) goes from the inside out."""
    while True:
        replaced = pattern.sub(replacement, text)
        if replaced == text:
            return text
        text = replaced


def _link_text(match: re.Match) -> str:
    """[[target|shown]] -> shown, [[target]] -> target; links into namespaces (File:, Category:, ...) vanish."""
    target, _, shown = match.group(1).partition("|")
    if ":" in target:
        return ""
    return (shown or target).split("|")[-1]


def plain_text(markup: str) -> str:
    """Wiki markup to plain paragraphs (tables, references, files and categories removed; templates marked)."""
    text = _COMMENT.sub("", markup)
    text = _REF.sub("", text)
    text = _replace_until_stable(_INNERMOST_TEMPLATE, _TEMPLATE_MARK, text)
    text = _replace_until_stable(_INNERMOST_TABLE, "", text)
    text = _replace_until_stable(_INNERMOST_LINK, _link_text, text)
    text = _EXTERNAL_LINK.sub(r"\1", text)
    text = _TAG.sub("", html.unescape(text))
    return text.replace("'''", "").replace("''", "")


def prose_sentences(text: str, min_words: int = 6, max_words: int = 40) -> list[str]:
    """The sentences of the text's prose paragraphs (no headings, lists, tables or indented lines)."""
    sentences = []
    for paragraph in text.split("\n"):
        paragraph = " ".join(paragraph.split())
        if not paragraph or paragraph[0] in "=*#:;|!{}" or paragraph.startswith("Category"):
            continue
        for sentence in _SENTENCE_END.split(paragraph):
            if (_PROSE.fullmatch(sentence) and min_words <= len(sentence.split()) <= max_words
                    and not any(trace in sentence for trace in _REMOVAL_TRACES)):
                sentences.append(sentence)
    return sentences


def article_sentences(source: Path) -> list[str]:
    """Every main-namespace article's prose sentences, in file order, each sentence once."""
    sentences: dict[str, None] = {}
    with bz2.open(source) as stream:
        for _, element in ElementTree.iterparse(stream):
            if not element.tag.endswith("}page"):
                continue
            namespace = element.findtext("{*}ns")
            markup = element.findtext("{*}revision/{*}text") or ""
            if namespace == "0" and not markup.lstrip().upper().startswith("#REDIRECT"):
                sentences.update(dict.fromkeys(prose_sentences(plain_text(markup))))
            element.clear()
    return list(sentences)


def english_sentences(cache_dir: str | Path) -> list[str]:
    """The Wikipedia sample's sentences, extracted once into `cache_dir/english_text/`."""
    source = wikipedia_sample_file()
    root = Path(cache_dir).expanduser() / "english_text" / f"wikipedia-sample-{source.stat().st_size}"

    def build(directory: Path) -> None:
        (directory / SENTENCES_FILE).write_text("\n".join(article_sentences(source)) + "\n", encoding="utf-8")

    return (build_once(root, build) / SENTENCES_FILE).read_text(encoding="utf-8").splitlines()
