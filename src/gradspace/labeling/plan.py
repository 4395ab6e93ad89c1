"""The run's plan: which method labels the features (the exact scan, the descent or both), what is scanned beside
a descent, and the descent's soft labels, trained for every feature at once."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig

from gradspace.labeling.config import LabelingConfig
from gradspace.labeling.discriminator import Discriminator
from gradspace.labeling.features import FeatureData
from gradspace.labeling.methods import resolve_method, scan_feasible, train_soft_labels
from gradspace.labeling.prompts import PromptBuilder, PromptSpec
from gradspace.labeling.scan import frequent_tokens
from gradspace.labeling.soft_label import SoftLabel
from gradspace.models.loading import LoadedModel


def descends(method: str) -> bool:
    """The method trains soft labels (the scan may run beside it)."""
    return method in ("descent", "both")


@dataclass
class LabelPlan:
    """How this run's trainable features get their labels, and what was trained for them."""

    method: str
    scans: bool  # the exact scan of every allowed token runs (as the method or as the baseline)
    one_token: Discriminator | None  # two-token labels: the one-token readout, for the best one-token label beside them
    frequent: torch.Tensor | None  # a descent without the full scan: the frequent words its baseline scans
    module: SoftLabel | None  # the trained soft labels of a descent
    train_seconds: float

    @property
    def descends(self) -> bool:
        return descends(self.method)


def plan_labels(cfg: DictConfig, config: LabelingConfig, loaded: LoadedModel, spec: PromptSpec, discriminator: Discriminator,
                allowed: torch.Tensor, trainable: list[FeatureData], loggers: list) -> LabelPlan:
    builder, tokenizer = discriminator.builder, loaded.tokenizer
    scans = all(scan_feasible(config, builder, allowed, f) for f in trainable)
    method = resolve_method(config, builder, scans)
    one_token = None
    if config.label.length > 1 and scans:
        one_token = Discriminator(loaded.model, PromptBuilder(spec, tokenizer, 1, add_bos=config.prompt.add_bos)).to(loaded.model.device)
    # Where the exact scan of every token is not run, a descent is compared with the same scan over frequent words.
    frequent = (frequent_tokens(tokenizer, allowed, config.evaluation.frequent_scan_words)
                if descends(method) and not scans and config.label.length == 1 and config.evaluation.frequent_scan_words else None)
    module, train_seconds = (train_soft_labels(cfg, config, discriminator, allowed, trainable, loggers)
                             if trainable and descends(method) else (None, 0.0))
    return LabelPlan(method, scans, one_token, frequent, module, train_seconds)
