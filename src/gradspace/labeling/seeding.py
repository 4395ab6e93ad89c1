"""Restarts seeded from the LM's own prediction of the category: the feature's training words listed in a prompt
that ends where the category is named ("dog, cat, horse are all kinds of"), and the LM's most probable allowed next
tokens ("animals", "creatures", ...) raise the initial logits of the restarts' soft labels, one token per restart. The
descent then refines them through the readout; it costs one forward per feature, where a random start must find the
category's region of the vocabulary by gradient alone."""

from __future__ import annotations

import random
from typing import Sequence

import torch

from gradspace.evaluation.logprobs import prefix_token_id
from gradspace.labeling.features import FeatureData


@torch.no_grad()
def predicted_categories(lm, tokenizer, features: Sequence[FeatureData], template: str, n_words: int, allowed: torch.Tensor,
                         count: int, seed: int) -> list[list[int]]:
    """Per feature, the `count` allowed tokens the LM finds most probable after `template` with `{words}` filled by
    `n_words` of the feature's training positives (a seeded sample), most probable first."""
    rng = random.Random(seed)
    device = lm.get_input_embeddings().weight.device
    predicted = []
    for feature in features:
        words = [e.text(tokenizer) for e in rng.sample(feature.train_positive, min(n_words, len(feature.train_positive)))]
        ids = [prefix_token_id(tokenizer)] + tokenizer.encode(template.format(words=", ".join(words)), add_special_tokens=False)
        logits = lm(input_ids=torch.tensor([ids], device=device)).logits[0, -1].float()
        logits = logits[: allowed.shape[0]].masked_fill(~allowed.to(device)[: logits.shape[0]], float("-inf"))
        predicted.append(logits.topk(count).indices.tolist())
    return predicted
