"""Real English text offline: the Wikipedia sample inside the gensim package, as SAE latents on a real LM read it."""

import importlib.util
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from gradspace.data.english_text import english_sentences
from gradspace.labeling.config import feature_config
from gradspace.labeling.features import load_corpus

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(importlib.util.find_spec("gensim") is None, reason="needs: pip install --no-deps gensim")]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def sentences(cache_dir):
    return english_sentences(cache_dir)


def test_the_wikipedia_sample_gives_thousands_of_plain_sentences(sentences):
    assert len(sentences) > 10_000 and sum(len(s.split()) for s in sentences) > 200_000
    assert len(set(sentences)) == len(sentences)
    markup = ("[[", "]]", "{{", "}}", "<", ">", "|", "==", "''", "&amp;", "\x00")
    assert not [s for s in sentences if any(m in s for m in markup) or not s.endswith(".") or not s[0].isupper()]
    assert sentences[0].startswith("Anarchism is")  # the first article of the sample


def test_sae_latents_of_a_real_lm_read_it_with_disjoint_held_out_articles(sentences, cache_dir):
    root = OmegaConf.load(ROOT / "conf" / "feature" / "sae_latent.yaml")
    feature = feature_config({**OmegaConf.to_container(root), "max_texts": 100_000})
    corpus = load_corpus(feature, {"source": "gguf", "name": "smollm2-135m"}, cache_dir)
    assert corpus.train + corpus.heldout == sentences  # the last 30% (whole articles) held out, in file order
    assert len(corpus.heldout) == len(sentences) - int(len(sentences) * 0.7) and not set(corpus.train) & set(corpus.heldout)
    # Word lists of real models count no words: they need no text.
    words = feature_config(OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "feature" / "word_lists.yaml")))
    assert load_corpus(words, {"source": "gguf"}, cache_dir) is None
