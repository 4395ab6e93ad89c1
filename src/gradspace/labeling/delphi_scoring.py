"""Labels scored the way EleutherAI delphi scores explanations (`delphi/scorers/classifier/detection.py, fuzz.py`), by
a local scorer LM that is not the optimiser (`evaluation.scorer_model`), on each latent's test windows
(`delphi_cache.latent_windows`: as many activating windows, drawn evenly across activation quantiles, as random
non-activating ones; none of them seen while the label was fitted).

Both read the window through the scorer's own oracle-checked per-token readout (`prompt.style_by_model`; with
prompt=contextual, "<window up to the token>. Here, the word <token> is a kind of <label>"): delphi's scorer answers
a yes/no prompt, which small LMs cannot follow (gradspace's oracle check: yes/no near chance on SmolLM2 and
Gemma-3-270M).
- detection: given the label, is the window one the latent fires in? The window's score is the readout at its most
  label-like word token (`window_readout`: the max over its tokens): nothing tells the scorer where the latent fired.
- fuzzing: the same windows with tokens marked as delphi marks them (an activating window its tokens at >= 0.3 x
  its largest activation, a non-activating one as many random tokens as activating windows fire on, on average);
  does the label fit the marked tokens? The window's score is the readout averaged over its marked tokens.

A readout gives a score, not delphi's 0/1 answer: every label's decision boundary is the midpoint of the two classes'
mean scores on the latent's validation windows (also never fitted on), and the test windows are classified at it.
Reported per latent and label, as delphi's `log/result_analysis.py` computes them: balanced accuracy, F1, precision,
recall, and the AUROC of the scores. Baselines take the same path: a random other latent's label, the most
frequent top-activating token, the vocabulary projection.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torchmetrics.functional.classification import binary_auroc

from gradspace.labeling.baselines import most_frequent_token
from gradspace.labeling.delphi_cache import (
    LatentWindows,
    Window,
    explanation_file,
    fuzz_positions,
    mean_activations_ceil,
)
from gradspace.labeling.discrete import HardLabelScorer
from gradspace.labeling.features import FeatureData
from gradspace.labeling.objective import balanced_mean
from gradspace.labeling.oracle import word_label_ids
from gradspace.labeling.prompts import Example
from gradspace.labeling.results import (
    DelphiKindSummary,
    DelphiMetrics,
    DelphiScores,
    DelphiSummary,
    FeatureLabel,
    FeatureResult,
)
from gradspace.labeling.scorer import SecondModelScorer, respell
from gradspace.labeling.window_readout import check_window_readout, token_branches, window_tables

log = logging.getLogger(__name__)
KINDS = ("detection", "fuzz")
LABEL_KINDS = ("label", "random_other_latent", "most_frequent_top_activating", "vocabulary_projection")
METRICS = ("balanced_accuracy", "f1", "precision", "recall", "auroc")


def classifier_metrics(validation: torch.Tensor, validation_targets: torch.Tensor, test: torch.Tensor,
                       test_targets: torch.Tensor) -> dict:
    """delphi's metrics (`compute_classification_metrics`) of the test scores classified at the validation scores'
    boundary (the midpoint of the class means), and their AUROC."""
    threshold = float(balanced_mean(validation.double(), validation_targets))
    predicted = test > threshold
    positive = test_targets.bool()
    tp, fp = int((predicted & positive).sum()), int((predicted & ~positive).sum())
    tn, fn = int((~predicted & ~positive).sum()), int((~predicted & positive).sum())
    pos, neg = tp + fn, tn + fp
    recall = tp / pos if pos else 0.0
    precision = tp / (tp + fp) if tp + fp else 0.0
    return {
        "balanced_accuracy": ((tp / pos if pos else 0.0) + (tn / neg if neg else 0.0)) / 2,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "precision": precision,
        "recall": recall,
        "auroc": float(binary_auroc(test.float(), test_targets.long())),
        "threshold": threshold,
    }


@dataclass
class WindowSet:
    """One latent's scored windows: validation then test, each activating first."""

    windows: list[Window]
    test: torch.Tensor  # [n] bool: a test window (else validation)
    targets: torch.Tensor  # [n] 1 for activating

    @classmethod
    def of(cls, sampled: LatentWindows) -> "WindowSet":
        parts = [(part, w) for part in ("validation", "test") for w in sampled.activating[part] + sampled.non_activating[part]]
        return cls([w for _, w in parts], torch.tensor([part == "test" for part, _ in parts]),
                   torch.tensor([int(w.activating) for _, w in parts]))


class DelphiScorer:
    """Detection and fuzzing by the second model of `SecondModelScorer` (its model, tokenizer and per-token readout)."""

    def __init__(self, scorer: SecondModelScorer, fuzz_threshold: float):
        self.scorer = scorer
        self.tokenizer = scorer.loaded.tokenizer
        self.fuzz_threshold = fuzz_threshold
        check_window_readout(scorer.discriminator(1).builder, scorer.spec.template)

    def token_example(self, window: Window, position: int, source_tokenizer) -> Example:
        """The window's token at `position` with the window before it as context, respelled for the scorer (a
        token with no text of its own, a space or a newline, is read as it is)."""
        token = window.tokens[position]
        word = source_tokenizer.decode([token], skip_special_tokens=True).strip() or source_tokenizer.decode([token]) or "-"
        return respell(Example(token, tuple(window.tokens[:position]), word), source_tokenizer, self.tokenizer)

    def _readouts(self, examples: list[Example], labels: Sequence[str]) -> dict[str, torch.Tensor | None]:
        """Each label's per-token readout [n] on the examples; labels of one token share one table of the scorer's log q."""
        discriminator_of = self.scorer.discriminator
        spelled = {label: word_label_ids(discriminator_of(1).builder, label) for label in dict.fromkeys(labels)}
        out: dict[str, torch.Tensor | None] = {label: None for label, ids in spelled.items() if not ids}
        for length in sorted({len(ids) for ids in spelled.values() if ids}):
            group = [label for label, ids in spelled.items() if len(ids) == length]
            discriminator = discriminator_of(length)
            scorer = HardLabelScorer(discriminator, examples, [], self.tokenizer.pad_token_id, self.scorer.allowed)
            scores, _ = scorer.per_example_outputs([spelled[label] for label in group])
            out.update({label: row.double() for label, row in zip(group, scores)})
        return out

    @torch.no_grad()
    def window_token_readouts(self, texts: Sequence[str], labels: Sequence[str]) -> dict[str, torch.Tensor | None]:
        """Each label's readout [n] on the texts, each read whole (`window_readout`): at its most label-like token."""
        discriminator = self.scorer.discriminator(1)
        spelled = {label: word_label_ids(discriminator.builder, label) for label in dict.fromkeys(labels)}
        windows = [self.tokenizer.encode(text, add_special_tokens=False) for text in texts]
        out: dict[str, torch.Tensor | None] = {label: None for label, ids in spelled.items() if not ids}
        one_token = [label for label, ids in spelled.items() if len(ids) == 1]
        if one_token:
            table, _ = window_tables(discriminator, windows, self.scorer.allowed)
            out.update({label: table[:, spelled[label][0]].double().cpu() for label in one_token})
        longer = {label: list(ids) for label, ids in spelled.items() if len(ids) > 1}
        if longer:
            pad = self.tokenizer.pad_token_id
            rows: dict[str, list[float]] = {label: [] for label in longer}
            for window in windows:
                sequence, branches = token_branches(discriminator.builder, window)
                for label, ids in longer.items():
                    log_p = torch.log_softmax(discriminator.branch_logits(sequence, [(p, tail + ids[:-1]) for p, tail in branches],
                                                                          len(ids), pad).float(), dim=-1)
                    picked = log_p.gather(-1, torch.tensor(ids, device=log_p.device).expand(len(branches), -1)[..., None])
                    rows[label].append(float(picked.sum((1, 2)).max()))
            out.update({label: torch.tensor(values, dtype=torch.float64) for label, values in rows.items()})
        return out

    @torch.no_grad()
    def score(self, sampled: LatentWindows, labels: dict[str, str | None], source_tokenizer) -> tuple[DelphiScores, dict[str, list[dict]]]:
        """The detection and fuzzing metrics of `labels` ({label kind: label text}) on the latent's test windows, and
        delphi's score files of the label itself ({kind: rows})."""
        windows = WindowSet.of(sampled)
        texts = [label for label in labels.values() if label]
        n_incorrect = mean_activations_ceil(sampled.activating["test"])
        window_texts = [source_tokenizer.decode(w.tokens, skip_special_tokens=True).strip() for w in windows.windows]
        detection = self.window_token_readouts(window_texts, texts)
        # fuzzing: one example per marked token, each window's score the mean of its tokens'
        marked = [fuzz_positions(w, n_incorrect, self.fuzz_threshold) for w in windows.windows]
        owner = torch.tensor([row for row, positions in enumerate(marked) for _ in positions])
        examples = [self.token_example(w, p, source_tokenizer) for w, positions in zip(windows.windows, marked) for p in positions]
        per_token = self._readouts(examples, texts)
        counts = torch.bincount(owner, minlength=len(windows.windows)).double()
        fuzz = {label: None if row is None else torch.zeros(len(windows.windows), dtype=torch.float64).index_add_(0, owner, row) / counts
                for label, row in per_token.items()}
        metrics: dict[str, dict[str, DelphiMetrics | None]] = {}
        files = {}
        for kind, readouts in (("detection", detection), ("fuzz", fuzz)):
            metrics[kind] = {}
            for label_kind, label in labels.items():
                scores = readouts.get(label) if label else None
                if scores is None:
                    metrics[kind][label_kind] = None if not label else DelphiMetrics(label, **dict.fromkeys(METRICS))
                    continue
                test, validation = windows.test, ~windows.test
                values = classifier_metrics(scores[validation], windows.targets[validation], scores[test], windows.targets[test])
                metrics[kind][label_kind] = DelphiMetrics(label, **{m: values[m] for m in METRICS})
                if label_kind == "label":
                    files[kind] = self.score_file(windows, scores, values["threshold"], marked if kind == "fuzz" else None,
                                                  source_tokenizer)
        scores = DelphiScores(scorer=self.scorer.loaded.name, latent=sampled.latent, hookpoint=sampled.hookpoint,
                              n_incorrect=n_incorrect, windows={"test": int(windows.test.sum()), "validation": int((~windows.test).sum())},
                              detection=metrics["detection"], fuzz=metrics["fuzz"])
        return scores, files

    def score_file(self, windows: WindowSet, scores: torch.Tensor, threshold: float, marked: list | None, source_tokenizer) -> list[dict]:
        """The label's test windows as delphi's scorers write them (`ClassifierOutput`): str_tokens, activations,
        distance (the quantile; -1 for non-activating), activating, prediction, probability (here a logistic of the
        score's distance from the boundary: the same order, so delphi's AUROC of it is the AUROC here), correct."""
        rows = []
        spread = float(scores[~windows.test].std()) or 1.0
        for index in windows.test.nonzero().flatten().tolist():
            window, score = windows.windows[index], float(scores[index])
            prediction = score > threshold
            rows.append({"str_tokens": source_tokenizer.batch_decode([[t] for t in window.tokens]),
                         "activations": window.activations, "distance": window.quantile if window.activating else -1,
                         "activating": window.activating, "prediction": prediction,
                         "probability": float(torch.sigmoid(torch.tensor((score - threshold) / spread))),
                         "correct": prediction == window.activating,
                         **({"marked": marked[index]} if marked is not None else {})})
        return rows


def random_other_label(results: Sequence[FeatureResult], index: int, seed: int) -> str | None:
    """A label of another latent of this run, drawn by the seed: what chance looks like for a label that names something."""
    others = [r.label for j, r in enumerate(results) if j != index and r.label]
    return random.Random(f"{seed}:{results[index].feature}").choice(others) if others else None


def most_frequent_text(tokens: Sequence[int], tokenizer) -> str | None:
    """The most frequent top-activating token as delphi would be handed it, whatever it is: unlike a label, a
    baseline here need not be a word of the label vocabulary ("not", "the" and "his" are what many latents fire on)."""
    frequent = most_frequent_token(tokens, torch.ones(max(tokens, default=0) + 1, dtype=torch.bool))
    return None if frequent is None else (tokenizer.decode([frequent]).strip() or None)


def score_latents(scorer: DelphiScorer, features: Sequence[FeatureData], results: Sequence[FeatureResult], source_tokenizer,
                  seed: int) -> dict[str, dict[str, list[dict]]]:
    """Detection and fuzzing of every labelled latent's label and baselines, into its result's `delphi`; delphi's
    score files of each scored latent ({feature: {kind: rows}})."""
    files = {}
    for index, (feature, result) in enumerate(zip(features, results)):
        if not isinstance(result, FeatureLabel) or feature.windows is None:
            continue
        projection = result.baselines.vocabulary_projection
        labels = {"label": result.label, "random_other_latent": random_other_label(results, index, seed),
                  "most_frequent_top_activating": most_frequent_text(feature.top_activating_tokens, source_tokenizer),
                  "vocabulary_projection": None if projection is None else projection.label}
        result.delphi, files[result.feature] = scorer.score(feature.windows, labels, source_tokenizer)
        log.info("%s: delphi detection balanced accuracy %s | fuzzing %s", result.feature,
                 *({k: None if v is None or v.balanced_accuracy is None else round(v.balanced_accuracy, 3)
                    for k, v in result.delphi.of(kind).items()} for kind in KINDS))
    return files


def label_above(scores: DelphiScores, kind: str, baseline: str) -> bool:
    """Whether the label's balanced accuracy is above the baseline's (a baseline the run lacks counts as beaten)."""
    other = scores.of(kind).get(baseline)
    return other is None or other.balanced_accuracy is None or scores.of(kind)["label"].balanced_accuracy > other.balanced_accuracy


def summary(results: Sequence[FeatureResult]) -> DelphiSummary | None:
    """Means over the scored latents, and per baseline on how many the label scored above it (balanced accuracy)."""
    scored = [r.delphi for r in results if isinstance(r, FeatureLabel) and r.delphi]
    if not scored:
        return None
    kinds = {}
    for kind in KINDS:
        means = {}
        for label_kind in LABEL_KINDS:
            values = [m.balanced_accuracy for s in scored if (m := s.of(kind).get(label_kind)) and m.balanced_accuracy is not None]
            means[label_kind] = sum(values) / len(values) if values else None
        kinds[kind] = DelphiKindSummary(
            mean_balanced_accuracy=means, mean_auroc=sum(s.of(kind)["label"].auroc for s in scored) / len(scored),
            label_above_baseline={b: sum(label_above(s, kind, b) for s in scored) for b in LABEL_KINDS[1:]},
            label_above_every_baseline=sum(all(label_above(s, kind, b) for b in LABEL_KINDS[1:]) for s in scored))
    return DelphiSummary(latents=len(scored), detection=kinds["detection"], fuzz=kinds["fuzz"])


def write_files(output_dir: Path, features: Sequence[FeatureData], results: Sequence[FeatureResult],
                files: dict[str, dict[str, list[dict]]], hookpoint_of, explanations: bool) -> None:
    """delphi's files beside results.json: explanations/<hookpoint>_latent<i>.txt (every labelled latent) and, where
    scored, scores/<detection|fuzz>/<hookpoint>_latent<i>.txt."""
    root = Path(output_dir) / "delphi"
    for feature, result in zip(features, results):
        place = hookpoint_of(feature)
        if place is None or not result.label:
            continue
        hookpoint, latent = place
        if explanations:
            explanation_file(root / "explanations", hookpoint, latent, result.label)
        for kind, rows in files.get(result.feature, {}).items():
            path = root / "scores" / kind / f"{hookpoint.replace('/', '--')}_latent{latent}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")


def table(results: Sequence[FeatureResult]) -> tuple[list[str], list[list]]:
    """The W&B table: per latent the label, its top-activating tokens and each label kind's detection and fuzzing
    balanced accuracy and AUROC."""
    columns = ["feature", "label", "top_activating"] + [f"{kind}_{label_kind}_{metric}" for kind in KINDS
                                                        for label_kind in LABEL_KINDS for metric in ("balanced_accuracy", "auroc")]
    rows = []
    for r in results:
        if not isinstance(r, FeatureLabel) or not r.delphi:
            continue
        row = [r.feature, r.label, " ".join(r.top_activating)]
        for kind in KINDS:
            for label_kind in LABEL_KINDS:
                metrics = r.delphi.of(kind).get(label_kind)
                row += [None, None] if metrics is None else [metrics.balanced_accuracy, metrics.auroc]
        rows.append(row)
    return columns, rows
