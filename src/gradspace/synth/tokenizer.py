"""A word-level tokenizer for the synthetic world, with Pythia's special-token conventions.

Every word of the synthetic vocabulary is one token, so a minimal pair differs in whole tokens and a model's
per-token log-probabilities line up with the grammar's words. Like Pythia's tokenizer, `<|endoftext|>` is both
BOS and EOS, `<|padding|>` pads, and encoding adds no special tokens: callers (the evaluator, the pretraining
packer) put the `<|endoftext|>` prefix in themselves, the lm-evaluation-harness way.
"""

from __future__ import annotations

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from gradspace.errors import GradspaceError

ENDOFTEXT = "<|endoftext|>"
PADDING = "<|padding|>"
UNKNOWN = "<unk>"
# Special tokens take the lowest ids, in Pythia's order (<|endoftext|> = 0, <|padding|> = 1).
SPECIAL_TOKENS = (ENDOFTEXT, PADDING, UNKNOWN)


def build_word_tokenizer(vocabulary: list[str], model_max_length: int | None = None) -> PreTrainedTokenizerFast:
    """A fast tokenizer mapping each whitespace-separated word of `vocabulary` to its own id.

    Ids follow `vocabulary`'s order after the special tokens (duplicates keep their first id); any other word
    encodes to `<unk>`. `model_max_length` (the model's context size) lets callers truncate without guessing.
    """
    words = list(dict.fromkeys(vocabulary))
    bad_words = [word for word in words if not word or word != word.strip() or len(word.split()) != 1]
    if bad_words:
        raise GradspaceError(
            f"vocabulary entries {bad_words[:5]!r} are not single whitespace-free words; give one word per entry"
        )
    clashes = [word for word in words if word in SPECIAL_TOKENS]
    if clashes:
        raise GradspaceError(f"vocabulary contains the special token(s) {clashes}; remove them, the tokenizer adds them")

    token_ids = {token: index for index, token in enumerate((*SPECIAL_TOKENS, *words))}
    backend = Tokenizer(models.WordLevel(vocab=token_ids, unk_token=UNKNOWN))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.add_special_tokens(list(SPECIAL_TOKENS))

    extra = {} if model_max_length is None else {"model_max_length": model_max_length}
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=ENDOFTEXT,
        eos_token=ENDOFTEXT,
        pad_token=PADDING,
        unk_token=UNKNOWN,
        **extra,
    )
