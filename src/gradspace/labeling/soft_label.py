"""The soft label: a learnable distribution p = softmax(v / T) over the vocabulary per label position, whose
embedding mixture p·E fills the prompt's label slots. K features × R restarts train side by side as rows of
v [K·R, L, V], so every step is one batched forward of the frozen discriminator.

Loss = balanced cross-entropy of the calibrated readout against the feature's activity
     + λ_H · entropy(p) + λ_KL · KL(p ‖ q), q the LM's own next-token distribution at the label slot.
The readout is calibrated per soft label: relative to its mean over the batch's words (half active, half not:
a label can raise every score, as "Yes" to everything does), times a learned scale plus a learned offset
(gradspace.labeling.objective holds the loss's terms, shared with the discrete step, and says how their
calibrations differ).
Temperature annealing and, late in the run, straight-through (the forward sees the argmax token, the gradient
flows to p) keep p from settling on an off-vocabulary mixture that no single word matches.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Callable, Iterator, Sequence

import lightning as L
import torch
from torch import nn
from torch.utils.data import IterableDataset

from gradspace.labeling.config import SoftLabelConfig
from gradspace.labeling.discriminator import Discriminator
from gradspace.labeling.features import FeatureData
from gradspace.labeling.objective import balanced_bce_per_group, learned_calibration, naturalness_kl
from gradspace.labeling.prompts import PromptBatch, PromptBuilder
from gradspace.labeling.vocabulary import word_tokens


def allowed_label_tokens(tokenizer, builder: PromptBuilder, vocabulary_size: int, vocabulary: str, min_letters: int = 1,
                         stop_words: bool = True) -> torch.Tensor:
    """Tokens a label may use: never special tokens or embedding rows beyond the tokenizer; with `words`, only word
    tokens (gradspace.labeling.vocabulary: whole words spelled with the leading space the template puts before the
    label, for BPE tokenizers, of at least `min_letters` letters, stop words only if `stop_words`)."""
    if vocabulary == "all":
        allowed = torch.zeros(vocabulary_size, dtype=torch.bool)
        allowed[: min(len(tokenizer), vocabulary_size)] = True
        allowed[[t for t in tokenizer.all_special_ids if t < vocabulary_size]] = False
        return allowed
    needs_space = builder.space_sensitive and builder.space_before.get("label", False)
    return word_tokens(tokenizer, vocabulary_size, min_letters, stop_words, needs_space)


class BalancedExamples(IterableDataset):
    """Endless training batches: for every feature, batch_size/2 positives and batch_size/2 negatives. An example
    drawn by several features is one prompt in the batch (`example_index` maps items to prompts), so the
    discriminator runs its label-independent part once.

    The negatives of a step are one draw shared by the features: a uniform draw from all features' training
    negatives, of which each feature takes those in its own pool, topped up from its pool where that leaves it
    short. Each feature's negatives are still a uniform sample of its own pool; features with one pool (word
    lists share their split of the negatives) then add only their positives to a step's prompts."""

    def __init__(self, features: Sequence[FeatureData], builder: PromptBuilder, batch_size: int, pad_id: int, seed: int):
        self.features = list(features)
        self.builder = builder
        self.half = batch_size // 2
        self.pad_id = pad_id
        self.seed = seed

    def __iter__(self) -> Iterator[dict]:
        rng = random.Random(self.seed)
        half = self.half
        negative_pools = [set(feature.train_negative) for feature in self.features]
        all_negatives = list(dict.fromkeys(e for feature in self.features for e in feature.train_negative))
        while True:
            shared = rng.sample(all_negatives, min(half, len(all_negatives)))
            examples, targets, feature_index = [], [], []
            for index, feature in enumerate(self.features):
                pool = feature.train_positive
                positives = rng.sample(pool, half) if len(pool) >= half else rng.choices(pool, k=half)
                negatives = [e for e in shared if e in negative_pools[index]]
                short = half - len(negatives)
                if short:
                    taken = set(negatives)
                    rest = [e for e in feature.train_negative if e not in taken]
                    negatives += rng.sample(rest, short) if len(rest) >= short else rng.choices(feature.train_negative, k=short)
                examples += positives + negatives
                targets += [1.0] * half + [0.0] * half
                feature_index += [index] * (2 * half)
            distinct = list(dict.fromkeys(examples))
            position = {example: index for index, example in enumerate(distinct)}
            batch = self.builder.batch(distinct, self.pad_id)
            yield {
                **{key: value for key, value in batch.as_dict().items() if value is not None},
                "example_index": torch.tensor([position[example] for example in examples]),
                "targets": torch.tensor(targets), "feature_index": torch.tensor(feature_index),
            }


class SoftLabel(L.LightningModule):
    def __init__(self, discriminator: Discriminator, allowed: torch.Tensor, feature_names: Sequence[str],
                 config: SoftLabelConfig, optimizer: Callable[..., torch.optim.Optimizer], total_steps: int, seed: int = 0,
                 seed_tokens: Sequence[int] | None = None):
        super().__init__()
        self.discriminator = discriminator
        self.config = config
        self.feature_names = list(feature_names)
        self.n_features = len(self.feature_names)
        self.optimizer_factory = optimizer
        self.total_steps = max(1, total_steps)
        self.register_buffer("allowed", allowed, persistent=False)
        self.register_buffer("takes_an", discriminator.builder.takes_an(discriminator.embedding.shape[0]), persistent=False)
        generator = torch.Generator().manual_seed(seed)
        vocabulary_size = discriminator.embedding.shape[0]
        init = torch.randn(self.n_features * config.restarts, config.length, vocabulary_size, generator=generator) * config.init_scale
        if seed_tokens is not None:  # one token per row (restart) starts ahead at the first position (gradspace.labeling.seeding)
            init[torch.arange(init.shape[0]), 0, torch.as_tensor(seed_tokens)] += config.seed_logit
        self.v = nn.Parameter(init)
        # Per row, the readout's learned log-scale and offset (the calibration the loss sees).
        self.calibration = nn.Parameter(torch.zeros(init.shape[0], 2))
        self.trajectory: list[dict] = []
        # How often each row's argmax was each label: candidates for the discrete step besides the final top ones.
        self.visited: list[Counter] = [Counter() for _ in range(init.shape[0])]

    def temperature(self) -> float:
        c = self.config
        progress = min(1.0, self.global_step / max(1, self.total_steps - 1))
        return c.temperature_start * (c.temperature_end / c.temperature_start) ** progress

    def distribution(self, temperature: float | None = None) -> torch.Tensor:
        """p [K·R, L, V], zero outside the allowed tokens."""
        t = self.temperature() if temperature is None else temperature
        return torch.softmax((self.v / t).masked_fill(~self.allowed, float("-inf")), dim=-1)

    def straight_through(self) -> bool:
        return self.global_step >= self.config.straight_through_from * self.total_steps

    def label_embeddings(self, p: torch.Tensor) -> torch.Tensor:
        embedding = self.discriminator.embedding
        soft = p @ embedding.float()  # float32 mixture even for bf16 models; the discriminator casts it back
        if not self.straight_through():
            return soft
        # Forward: the argmax token's own embedding row; backward: the gradient of the mixture.
        return embedding[p.argmax(-1)] + soft - soft.detach()

    def label_probs(self, p: torch.Tensor) -> torch.Tensor:
        """p as the label_likelihood readout scores it: straight-through like the embeddings (one-hot forward)."""
        if not self.straight_through():
            return p
        hard = torch.nn.functional.one_hot(p.argmax(-1), p.shape[-1]).to(p.dtype)
        return hard + p - p.detach()

    def an_weights(self, p: torch.Tensor) -> torch.Tensor:
        """[R] each label's weight on the article "an": the probability of its first token taking "an"
        (straight-through like the label itself)."""
        takes_an = self.takes_an.to(p.device, p.dtype)
        soft = p[:, 0] @ takes_an
        if not self.straight_through():
            return soft
        return takes_an[p[:, 0].argmax(-1)] + soft - soft.detach()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        restarts = self.config.restarts
        n = batch["example_index"].shape[0]
        prompts = PromptBatch(**{field: batch.get(field) for field in PromptBatch.__dataclass_fields__})
        restart_index = torch.arange(restarts, device=self.device).repeat_interleave(n)
        rows = batch["feature_index"].repeat(restarts) * restarts + restart_index
        targets = batch["targets"].repeat(restarts).float()

        p = self.distribution()
        want_prior = self.config.kl_weight > 0
        out = self.discriminator(prompts, self.label_embeddings(p), rows, with_slot_logits=want_prior, an_weights=self.an_weights(p),
                                 examples=batch["example_index"].repeat(restarts), label_probs=self.label_probs(p))
        scores = learned_calibration(out.scores, rows, self.calibration)
        prediction_per_row = balanced_bce_per_group(scores, targets, rows, p.shape[0])
        prediction = prediction_per_row.mean()
        log_p = torch.log(p.clamp_min(1e-12))
        entropy = -(p * log_p).sum(-1).mean()
        kl = naturalness_kl(p, log_p, out, rows, self.allowed) if want_prior else torch.zeros((), device=self.device)
        loss = prediction + self.config.entropy_weight * entropy + self.config.kl_weight * kl

        with torch.no_grad():
            accuracy = ((scores > 0).float() == targets).float().mean()
            top_prob, top_token = p[:, 0].max(-1)  # [K·R]
            for row, label in enumerate(p.argmax(-1).tolist()):
                self.visited[row][tuple(label)] += 1
        self.log_dict({
            "train/loss": loss, "train/prediction_loss": prediction, "train/entropy": entropy, "train/kl": kl,
            "train/temperature": self.temperature(), "train/soft_accuracy": accuracy,
            "train/straight_through": float(self.straight_through()),
        }, prog_bar=True)
        per_feature = top_prob.view(self.n_features, restarts).max(-1)
        self.log_dict({f"label_probability/{name}": per_feature.values[k] for k, name in enumerate(self.feature_names)})
        self.trajectory.append({
            "step": int(self.global_step), "loss": float(loss.detach()), "temperature": self.temperature(),
            "top_token": top_token.view(self.n_features, restarts).tolist(),
            "top_probability": top_prob.view(self.n_features, restarts).tolist(),
            # per feature and restart: the readout's balanced cross-entropy, the objective's prediction term
            "prediction_loss": prediction_per_row.detach().view(self.n_features, restarts).tolist(),
        })
        return loss

    def configure_optimizers(self):
        return self.optimizer_factory([self.v, self.calibration])
