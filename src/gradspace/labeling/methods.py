"""How a feature's label is found: the exact scan of every allowed token, the descent (soft labels trained in one
batch, then the discrete step), and which of them a run uses."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import hydra
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from gradspace.errors import GradspaceError
from gradspace.labeling.config import DelphiFeatureConfig, LabelingConfig
from gradspace.labeling.discrete import HardLabelScorer, LabelScore, select_label
from gradspace.labeling.discriminator import Discriminator
from gradspace.labeling.features import FeatureData
from gradspace.labeling.oracle import is_accepted
from gradspace.labeling.prompts import PromptBuilder
from gradspace.labeling.results import ExampleCounts, Selection, SoftLabelResult, TopToken
from gradspace.labeling.scan import ScanResult, beam_scan, vocabulary_scan
from gradspace.labeling.seeding import predicted_categories
from gradspace.labeling.soft_label import BalancedExamples, SoftLabel
from gradspace.labeling.vocabulary import token_text
from gradspace.labeling.window_readout import WindowLabelScorer
from gradspace.utils.progress import with_step_progress_bar

log = logging.getLogger(__name__)


@dataclass
class FeatureScorers:
    """One feature's hard-label scorers under one discriminator, built once: a scorer keeps its prompts and, where the
    label is only predicted, its table of log q, which every label it scores reuses."""

    training: HardLabelScorer  # the training and validation words, with naturalness: what the descent and the scan minimise
    validation: HardLabelScorer  # with naturalness: the discrete step's ranking, and every label's decision boundary
    heldout: HardLabelScorer  # the held-out words, scored only at the end

    @classmethod
    def build(cls, config: LabelingConfig, feature: FeatureData, discriminator: Discriminator, allowed: torch.Tensor) -> "FeatureScorers":
        limit, heldout_limit = config.discrete.max_examples, config.evaluation.max_examples
        pad_id, kl_weight = discriminator.builder.tokenizer.pad_token_id, config.label.kl_weight
        if isinstance(config.feature, DelphiFeatureConfig) and config.feature.fit_on == "windows":
            windows = feature.windows

            def tokens(part: str, activating: bool, count: int) -> list[list[int]]:
                return [w.tokens for w in (windows.activating if activating else windows.non_activating)[part][:count]]

            return cls(
                WindowLabelScorer(discriminator, tokens("train", True, limit) + tokens("validation", True, limit),
                                  tokens("train", False, limit) + tokens("validation", False, limit), allowed, kl_weight),
                WindowLabelScorer(discriminator, tokens("validation", True, limit), tokens("validation", False, limit), allowed,
                                  kl_weight),
                WindowLabelScorer(discriminator, tokens("test", True, heldout_limit), tokens("test", False, heldout_limit), allowed))
        return cls(
            HardLabelScorer(discriminator, feature.train_positive[:limit] + feature.validation_positive[:limit],
                            feature.train_negative[:limit] + feature.validation_negative[:limit], pad_id, allowed, kl_weight),
            HardLabelScorer(discriminator, feature.validation_positive[:limit], feature.validation_negative[:limit], pad_id,
                            allowed, kl_weight),
            HardLabelScorer(discriminator, feature.heldout_positive[:heldout_limit], feature.heldout_negative[:heldout_limit],
                            pad_id, allowed))

    def heldout_score(self, label: tuple[int, ...]) -> LabelScore:
        """The label on the held-out words, at its decision boundary on the validation words."""
        return self.heldout.score_labels([label], [self.validation.score_labels([label])[0].threshold])[0]

def scan_feasible(config: LabelingConfig, builder: PromptBuilder, allowed: torch.Tensor, feature: FeatureData) -> bool:
    """Whether the exact scan is affordable: a table (the label is only predicted; two-token labels by a beam over
    it), else one forward per (token, training or validation example) within `evaluation.scan_max_items`."""
    if builder.readout == "label_likelihood":
        return True
    limit = config.discrete.max_examples
    examples = sum(len(part[:limit]) for part in (feature.train_positive, feature.validation_positive,
                                                  feature.train_negative, feature.validation_negative))
    return config.label.length == 1 and int(allowed.sum()) * examples <= config.evaluation.scan_max_items

def resolve_method(config: LabelingConfig, builder: PromptBuilder, feasible: bool) -> str:
    """label.method with auto resolved: the scan where the readout only predicts the label (a table), else the descent."""
    if config.label.method == "auto":
        return "scan" if builder.readout == "label_likelihood" else "descent"
    if config.label.method == "scan" and not feasible:
        raise GradspaceError(f"label.method=scan: this readout reads the label, so the scan costs one forward per token and "
                             f"example, more than evaluation.scan_max_items={config.evaluation.scan_max_items}; use "
                             f"label.method=descent, a smaller label.vocabulary, or raise evaluation.scan_max_items")
    return config.label.method

def run_scan(config: LabelingConfig, scorers: FeatureScorers, one_token: FeatureScorers | None
             ) -> tuple[ScanResult, ScanResult | None]:
    """The scan's label on the training and validation words: one-token labels over every allowed token, two-token
    labels by `beam_scan` from the one-token scan's best first tokens (`one_token`: the scorers of one-token labels);
    (the scan, the one-token scan it started from or None)."""
    if one_token is None:
        return vocabulary_scan(scorers.training), None
    single = vocabulary_scan(one_token.training, keep=config.label.scan_beam)
    return beam_scan(scorers.training.discriminator, scorers.training, [ids[0] for ids, _ in single.ranking]), single

def train_soft_labels(cfg: DictConfig, config: LabelingConfig, discriminator: Discriminator, allowed: torch.Tensor,
                      features: list[FeatureData], loggers: list, callbacks: tuple = ()) -> tuple[SoftLabel, float]:
    """All features' soft labels trained side by side by the configured Lightning trainer, with `callbacks` beside its
    own (a benchmark's step timer); (module, seconds)."""
    names = [f.name for f in features]
    start = time.perf_counter()
    seed_tokens = None
    if config.label.seed_prompt is not None:
        predicted = predicted_categories(discriminator.lm, discriminator.builder.tokenizer, features, config.label.seed_prompt,
                                         config.label.seed_words, allowed, config.label.restarts, int(cfg.seed))
        seed_tokens = [token for tokens in predicted for token in tokens]
    module = SoftLabel(discriminator, allowed, names, config.label, hydra.utils.instantiate(config.label.optimizer),
                       total_steps=config.label.steps, seed=int(cfg.seed), seed_tokens=seed_tokens)
    # label.yaml sets the trainer's steps from label.steps and turns checkpoints off; every trainer.* override applies.
    trainer = hydra.utils.instantiate(cfg.trainer, logger=loggers or False,
                                      callbacks=with_step_progress_bar(list(callbacks), cfg.trainer, "soft-label steps"))
    pad_id = discriminator.builder.tokenizer.pad_token_id
    loader = DataLoader(BalancedExamples(features, discriminator.builder, config.label.batch_size, pad_id, int(cfg.seed)),
                        batch_size=None, num_workers=0)
    trainer.fit(module, loader)
    seconds = time.perf_counter() - start
    module.to(trainer.strategy.root_device)
    module.eval()
    return module, seconds

def descent_label(config: LabelingConfig, feature: FeatureData, p: torch.Tensor, visited: list[tuple[int, ...]],
                  scorers: FeatureScorers) -> tuple[tuple[int, ...], float, dict]:
    """The discrete step over one feature's restarts' soft labels `p` [R, L, V] on the validation examples: (the chosen
    label, its validation threshold, the soft label's own result and the selection's record)."""
    tokenizer = scorers.training.discriminator.builder.tokenizer
    limit = config.discrete.max_examples
    selection = scorers.validation
    tie_scorer = scorers.training if config.discrete.tie_objective_words == "train_and_validation" else None
    start = time.perf_counter()
    chosen = select_label(selection, p, config.discrete, visited, tie_scorer)
    selection_seconds = time.perf_counter() - start  # the search's own time; what follows is scored for the record
    # The soft label's own result: the argmax of the restart whose argmax did best on validation, and its top 10.
    argmaxes = [tuple(int(t) for t in p[r].argmax(-1).tolist()) for r in range(p.shape[0])]
    unscored = [ids for ids in dict.fromkeys(argmaxes) if chosen.scores_of(ids) is None]
    validation = {s.label_ids: s for s in chosen.scored} | {s.label_ids: s for s in (selection.score_labels(unscored) if unscored else [])}
    restart = max(range(p.shape[0]), key=lambda r: validation[argmaxes[r]].ranking_key())
    top10 = p[restart, 0].topk(10)
    top10_labels = [(int(t),) + argmaxes[restart][1:] for t in top10.indices]
    held = {ids: scorers.heldout.score_labels([ids], [validation[ids].threshold] if ids in validation else None)[0]
            for ids in dict.fromkeys([argmaxes[restart], *top10_labels])}
    best = chosen.best.label_ids
    token_probs = torch.stack([p[:, position, token] for position, token in enumerate(best)], dim=-1).prod(-1)
    soft_argmax = token_text(tokenizer, argmaxes[restart])
    record = {
        "probability": float(token_probs.max()),
        "soft_label": SoftLabelResult(restart, soft_argmax, is_accepted(soft_argmax, feature), held[argmaxes[restart]].auroc,
                                      held[argmaxes[restart]].balanced_accuracy),
        "top10": [TopToken(token_text(tokenizer, [int(t)]), float(pr), held[ids].auroc)
                  for pr, t, ids in zip(top10.values, top10.indices, top10_labels)],
        "restart_argmax": [token_text(tokenizer, ids) for ids in argmaxes],
        "selection": Selection(
            accuracy=chosen.best.balanced_accuracy, auroc=chosen.best.auroc, loss=chosen.best.loss,
            naturalness=chosen.best.naturalness, objective=chosen.best.objective, n_candidates=len(chosen.scored),
            found_by=chosen.found_by[best], seconds=round(selection_seconds, 3),
            top_ranked=token_text(tokenizer, chosen.scored[0].label_ids), tied=[token_text(tokenizer, ids) for ids in chosen.tied],
            tie_objectives=[round(chosen.tie_objectives[ids], 4) for ids in chosen.tied],
            tie_aurocs=[round(chosen.tie_aurocs[ids], 4) for ids in chosen.tied],
            examples=ExampleCounts(len(feature.validation_positive[:limit]), len(feature.validation_negative[:limit])),
            ranking=[[token_text(tokenizer, s.label_ids), round(s.auroc, 4), round(s.balanced_accuracy, 4)]
                     for s in chosen.scored[:10]]),
    }
    return best, chosen.best.threshold, record
