"""A whole window read through the per-token readout: each word token of the window, with the window before it as its
context, is asked about the label ("<window up to the token>. Here, the word <token> is a kind of <label>"), and the
window's score is the readout at its most label-like token (the max over its tokens). Nothing tells the reader where
a latent fired: this is delphi's detection question for a scorer that cannot follow a yes/no prompt.

The window runs once; each token's readout continues it from that token (`Discriminator.branch_logits`), so a
window of n tokens costs one forward of n tokens and one of n short continuations, not n prompts."""

from __future__ import annotations

from typing import Sequence

import torch

from gradspace.errors import GradspaceError
from gradspace.labeling.discrete import HardLabelScorer
from gradspace.labeling.discriminator import Discriminator
from gradspace.labeling.objective import slot_log_prior
from gradspace.labeling.prompts import Example, PromptBuilder


def check_window_readout(builder: PromptBuilder, template: str) -> None:
    """A window is read token by token only through a readout that opens with the text up to the token and then
    predicts the label."""
    if builder.pieces[:3] != ["context", [], "word"] or builder.readout != "label_likelihood" or builder.uses_label_article:
        raise GradspaceError(f"reading whole windows needs a readout that opens with '{{context}} {{word}}', reads "
                             f"label_likelihood and has no {{label_article}} (the template is {template!r}, readout "
                             f"{builder.readout}): use prompt=contextual with the label_likelihood family")


def token_branches(builder: PromptBuilder, ids: Sequence[int]) -> tuple[list[int], list[tuple[int, list[int]]]]:
    """The window's tokens `ids` after the prompt's prefix, and per word token (one with a letter or digit; every
    token if none has) its position and the readout's tokens after it, up to the label."""
    tokenizer = builder.tokenizer
    ids = list(ids) or [tokenizer.pad_token_id]
    start = len(builder.prefix_ids)
    words = [tokenizer.decode([token]).strip() for token in ids]
    positions = [i for i, word in enumerate(words) if any(c.isalnum() for c in word)] or list(range(len(ids)))
    branches = []
    for i in positions:
        word = words[i] or tokenizer.decode([ids[i]])
        built, label_positions, _ = builder.build(Example(ids[i], tuple(ids[:i]), word))
        # the prompt opens with the context and the word: the window's own tokens up to this one take their place
        branches.append((start + i, built[i + len(builder.spell(word, "word")) : label_positions[0]]))
    return list(builder.prefix_ids) + ids, branches


def token_logits(discriminator: Discriminator, ids: Sequence[int]) -> torch.Tensor:
    """[word tokens, V] the readout's logits at the label slot after each word token of the window (its token ids in
    the reader's vocabulary)."""
    sequence, branches = token_branches(discriminator.builder, ids)
    return discriminator.branch_logits(sequence, branches, 1, discriminator.builder.tokenizer.pad_token_id)[:, 0].float()


def window_tables(discriminator: Discriminator, windows: Sequence[Sequence[int]], allowed: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per window (its token ids in the reader's vocabulary): log q of every one-token label at the window's most
    label-like token [n, V] (the max over its word tokens), and the naturalness prior [n, V] (log q over the allowed
    tokens, averaged over the window's tokens). The reader is frozen, so each window's rows are kept
    (`Discriminator.window_rows`, least recently used dropped beyond its `slot_cache_bytes`): a window read again, by
    another scorer or another latent, costs no forward."""
    kept = discriminator.window_rows
    for ids in dict.fromkeys(tuple(w) for w in windows):
        if ids in kept:
            kept.move_to_end(ids)
            continue
        logits = token_logits(discriminator, ids)
        kept[ids] = torch.stack([torch.log_softmax(logits, dim=-1).amax(0), slot_log_prior(logits, allowed.to(logits.device)).mean(0)])
        while len(kept) * kept[ids].nbytes > discriminator.slot_cache_bytes:
            kept.popitem(last=False)
    rows = torch.stack([kept[tuple(w)] for w in windows])
    return rows[:, 0], rows[:, 1]


class WindowLabelScorer(HardLabelScorer):
    """`HardLabelScorer` over whole windows (activating ones, then non-activating ones): every one-token label read
    from one table per window (`window_tables`), so the scan, the decision boundaries and the held-out scores take
    the same paths as over tokens."""

    def __init__(self, discriminator: Discriminator, positives: Sequence[Sequence[int]], negatives: Sequence[Sequence[int]],
                 allowed: torch.Tensor, kl_weight: float = 0.0):
        check_window_readout(discriminator.builder, discriminator.builder.spec.template)
        self.discriminator = discriminator
        self.windows = [list(w) for w in positives] + [list(w) for w in negatives]
        self.targets = torch.tensor([1] * len(positives) + [0] * len(negatives))
        self.allowed = allowed
        self.kl_weight = kl_weight
        self._label_free: tuple[torch.Tensor, torch.Tensor] | None = None

    def label_free_log_q(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._label_free is None:
            self._label_free = window_tables(self.discriminator, self.windows, self.allowed)
        return self._label_free

    def per_example_outputs(self, labels: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        if any(len(label) != 1 for label in labels):
            raise GradspaceError("labels fitted on whole windows are one token long: use label.length=1")
        return super().per_example_outputs(labels)
