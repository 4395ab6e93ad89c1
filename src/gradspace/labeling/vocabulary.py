"""Which tokens of a real vocabulary are words: labels are drawn from them, and word-list features take their
inactive examples from them.

A word token is alphabetic, spelled with the tokenizer's word-start marker where it has one (BPE's "Ġdog",
SentencePiece's "▁dog": a word that begins after a space, not a piece of a longer word), at least `min_letters`
long (shorter ones are mostly fragments: "su", "pt"), and, unless asked, no function or stop word.
"""

from __future__ import annotations

import torch

from gradspace.errors import GradspaceError

# English function and stop words: they fit every slot of a prompt and name no category.
STOP_WORDS = frozenset("""
a about above after again against all also am an and any are as at be because been before being below between both
but by can could did do does doing down during each either else ever every few for from further had has have having
he her here hers herself him himself his how however i if in into is it its itself just least less let like may me
might more most much must my myself neither no nor not now of off often on once one only or other ought our ours
ourselves out over own per quite rather same shall she should since so some such than that the their theirs them
themselves then there these they this those though through thus to too under until up upon us very was we well were
what when where whether which while who whom whose why will with within without would yet you your yours yourself
yourselves across along among around behind beside besides beyond near onto toward towards via amongst whereas
whereby wherever whenever whoever whatever whichever anyone anything anybody someone something somebody everyone
everything everybody nobody nothing none another many several various certain enough
""".split())


def is_space_sensitive(tokenizer) -> bool:
    """True for BPE-style tokenizers where ' dog' and 'dog' are different tokens (the space belongs to the token)."""
    return tokenizer.encode(" the", add_special_tokens=False) != tokenizer.encode("the", add_special_tokens=False)


def word_tokens(tokenizer, vocabulary_size: int, min_letters: int = 1, stop_words: bool = True,
                needs_space: bool | None = None) -> torch.Tensor:
    """[vocabulary_size] bool: the word tokens (see the module docstring); never special tokens or embedding rows
    beyond the tokenizer. `needs_space` (default: the tokenizer is space-sensitive) asks for the word-start marker."""
    needs_space = is_space_sensitive(tokenizer) if needs_space is None else needs_space
    special = set(tokenizer.all_special_ids)
    size = min(len(tokenizer), vocabulary_size)
    texts = tokenizer.batch_decode([[token] for token in range(size)])
    words = torch.zeros(vocabulary_size, dtype=torch.bool)
    for token, text in enumerate(texts):
        word = text.strip()
        words[token] = (token not in special and word.isalpha() and len(word) >= min_letters
                        and (not needs_space or text.startswith(" ")) and (stop_words or word.lower() not in STOP_WORDS))
    if not words.any():
        raise GradspaceError("no token of the vocabulary is a word by these rules; use label.vocabulary=all or lower label.min_letters")
    return words


def token_text(tokenizer, token_ids) -> str:
    """The label's text: its tokens decoded, without the space a word-initial token carries."""
    return tokenizer.decode(list(token_ids)).strip()
