"""The document-start token a tokenizer's model saw before every pretraining document: every sentence and prompt
gradspace scores is conditioned on it. Fixed once per loaded tokenizer (`model.prefix_token`, or a default)."""

from __future__ import annotations

from gradspace.errors import GradspaceError

PREFIX_ATTRIBUTE = "gradspace_prefix_token_id"  # set on a tokenizer by `set_prefix_token`
# Tried in this order when no prefix token is configured: the names under which tokenizers keep the token that
# separated documents in pretraining.
DOCUMENT_SEPARATORS = ("<|endoftext|>",)


def _chat_markers(tokenizer) -> set[str]:
    """Special tokens that the tokenizer's chat template writes literally: role markers, not document starts."""
    template = getattr(tokenizer, "chat_template", None)
    if not isinstance(template, str):
        return set()
    return {token for token in getattr(tokenizer, "all_special_tokens", []) if token and token in template}


def default_prefix_token(tokenizer) -> str:
    """The token pretraining documents started with, as far as the tokenizer tells: BOS, else EOS, else
    `<|endoftext|>`, skipping chat role markers (SmolLM2-Instruct's BOS is `<|im_start|>`, which starts a chat turn)."""
    markers = _chat_markers(tokenizer)
    candidates = [tokenizer.bos_token, tokenizer.eos_token, *DOCUMENT_SEPARATORS]
    vocabulary = tokenizer.get_vocab()
    for token in candidates:
        if token and token not in markers and token in vocabulary:
            return token
    raise GradspaceError(
        "cannot tell which token starts a document for this tokenizer (its BOS and EOS are chat markers or missing); "
        "set model.prefix_token=<the token the model saw at document starts>"
    )


def set_prefix_token(tokenizer, token: str | None) -> int:
    """Fix the token every sentence and prompt is conditioned on (`model.prefix_token`; None: `default_prefix_token`)."""
    token = token or default_prefix_token(tokenizer)
    token_id = tokenizer.get_vocab().get(token)
    if token_id is None:
        raise GradspaceError(f"model.prefix_token={token!r} is not a token of this tokenizer; give one of its special tokens, e.g. {tokenizer.eos_token!r}")
    setattr(tokenizer, PREFIX_ATTRIBUTE, token_id)
    return token_id


def prefix_token_id(tokenizer) -> int:
    """The document-start token that the evaluator, FTGD, held-out loss and labeling prompts all put first."""
    token_id = getattr(tokenizer, PREFIX_ATTRIBUTE, None)
    return token_id if token_id is not None else set_prefix_token(tokenizer, None)
