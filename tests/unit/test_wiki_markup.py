"""Wiki markup to prose sentences (no data file: the markup is written here)."""

import pytest

from gradspace.data.english_text import plain_text, prose_sentences

pytestmark = pytest.mark.unit

MARKUP = """{{Infobox country|name=Albania|capital=[[Tirana]]|note={{lang|sq|Shqipëri}}}}
'''Albania''' is a country in [[Southeast Europe|southeastern Europe]].<ref name="cia">{{cite web|url=http://x.org}}</ref> It has a coast on the [[Adriatic Sea]].
[[File:Tirana.jpg|thumb|The capital, [[Tirana]], at night.]]
== History ==
The region was part of the [[Roman Empire]] for centuries, see [http://example.org the archive].<!-- a comment -->
* a list item that is not prose.
{| class="wikitable"
| a table cell. || another cell.
|}
The population was about &lt;b&gt;three million&lt;/b&gt; in 2011, as the census showed.
It is also known as {{lang|sq|Shqipëria}} in its own language, and that sentence loses its template.
[[Category:Countries in Europe]]"""


def test_markup_becomes_the_article_prose():
    sentences = prose_sentences(plain_text(MARKUP), min_words=5)
    assert sentences == [
        "Albania is a country in southeastern Europe.",
        "It has a coast on the Adriatic Sea.",
        "The region was part of the Roman Empire for centuries, see the archive.",
        "The population was about three million in 2011, as the census showed.",
    ]  # the last lies around a template: what it stood for is missing, so it goes


def test_sentences_outside_the_length_bounds_are_left_out():
    text = "Short one here. This sentence has exactly seven words in it."
    assert prose_sentences(text, min_words=4, max_words=7) == []
    assert prose_sentences(text, min_words=3, max_words=11) == ["Short one here.", "This sentence has exactly seven words in it."]
