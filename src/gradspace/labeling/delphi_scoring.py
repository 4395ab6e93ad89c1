"""Labels scored the way EleutherAI delphi scores explanations (`delphi/scorers/classifier/detection.py, fuzz.py`), by
a local scorer LM that is not the optimiser (`evaluation.scorer_model`), on each latent's test windows
(`delphi_cache.latent_windows`: as many activating windows, drawn evenly across activation quantiles, as random
non-activating ones; none of them seen while the label was fitted).

- detection: given the label, is the window one the latent fires in? delphi's scorer answers a yes/no prompt; small
  LMs cannot follow one (gradspace's oracle check: yes/no near chance on SmolLM2 and Gemma-3-270M), so the readout
  here is the likelihood of the label after the window (`delphi.detection_template`), one forward per window whose
  next-token table every label reads.
- fuzzing: the same windows with tokens marked as delphi marks them (an activating window its tokens at >= 0.3 x
  its largest activation, a non-activating one as many random tokens as activating windows fire on, on average);
  does the label fit the marked tokens? The readout is the scorer's own oracle-checked per-token readout
  (`prompt.style_by_model`; with prompt=contextual, "<window up to the token>. Here, the word <token> is a kind of
  <label>"), averaged over the window's marked tokens.

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
from gradspace.labeling.discriminator import Discriminator
from gradspace.labeling.objective import balanced_mean
from gradspace.labeling.oracle import word_label_ids
from gradspace.labeling.prompts import Example, PromptBuilder, PromptSpec
from gradspace.labeling.scorer import SecondModelScorer, respell

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

    def __init__(self, scorer: SecondModelScorer, detection_template: str, fuzz_threshold: float, add_bos: bool):
        self.scorer = scorer
        self.tokenizer = scorer.loaded.tokenizer
        self.fuzz_threshold = fuzz_threshold
        # The window fills the word slot: its text, spelled by the scorer's tokenizer.
        self.detection_spec = PromptSpec(style="delphi_detection", template=detection_template.replace("{window}", "{word}"),
                                         answers=None, readout="label_likelihood")
        self.add_bos = add_bos
        self._detection: dict[int, Discriminator] = {}

    def detection_discriminator(self, length: int) -> Discriminator:
        if length not in self._detection:
            builder = PromptBuilder(self.detection_spec, self.tokenizer, length, add_bos=self.add_bos)
            self._detection[length] = Discriminator(self.scorer.loaded.model, builder).to(self.scorer.loaded.model.device)
        return self._detection[length]

    def window_example(self, window: Window, source_tokenizer) -> Example:
        text = source_tokenizer.decode(window.tokens, skip_special_tokens=True).strip()
        ids = self.tokenizer.encode(text, add_special_tokens=False) or [self.tokenizer.pad_token_id]
        return Example(ids[0], (), text)

    def token_example(self, window: Window, position: int, source_tokenizer) -> Example:
        """The window's token at `position` with the window before it as context, respelled for the scorer (a
        token with no text of its own, a space or a newline, is read as it is)."""
        token = window.tokens[position]
        word = source_tokenizer.decode([token], skip_special_tokens=True).strip() or source_tokenizer.decode([token]) or "-"
        return respell(Example(token, tuple(window.tokens[:position]), word), source_tokenizer, self.tokenizer)

    def _readouts(self, discriminator_of, examples: list[Example], labels: Sequence[str]) -> dict[str, torch.Tensor | None]:
        """Each label's readout [n] on the examples; labels of one token share one table of the scorer's log q."""
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
    def score(self, sampled: LatentWindows, labels: dict[str, str | None], source_tokenizer) -> dict:
        """Per kind (detection, fuzz) and label kind: the metrics of `labels` ({kind: label text}) on the latent's
        test windows, and what delphi's score files hold for the label itself."""
        windows = WindowSet.of(sampled)
        texts = [label for label in labels.values() if label]
        test_activating = sampled.activating["test"]
        n_incorrect = mean_activations_ceil(test_activating)
        # detection: one example per window
        detection = self._readouts(self.detection_discriminator, [self.window_example(w, source_tokenizer) for w in windows.windows], texts)
        # fuzzing: one example per marked token, each window's score the mean of its tokens'
        marked = [fuzz_positions(w, n_incorrect, self.fuzz_threshold) for w in windows.windows]
        owner = torch.tensor([row for row, positions in enumerate(marked) for _ in positions])
        examples = [self.token_example(w, p, source_tokenizer) for w, positions in zip(windows.windows, marked) for p in positions]
        per_token = self._readouts(self.scorer.discriminator, examples, texts)
        counts = torch.bincount(owner, minlength=len(windows.windows)).double()
        fuzz = {label: None if row is None else torch.zeros(len(windows.windows), dtype=torch.float64).index_add_(0, owner, row) / counts
                for label, row in per_token.items()}
        result = {"n_incorrect": n_incorrect, "windows": {"test": int(windows.test.sum()), "validation": int((~windows.test).sum())}}
        files = {}
        for kind, readouts in (("detection", detection), ("fuzz", fuzz)):
            result[kind] = {}
            for label_kind, label in labels.items():
                scores = readouts.get(label) if label else None
                if scores is None:
                    result[kind][label_kind] = None if not label else {"label": label, **{m: None for m in METRICS}}
                    continue
                test, validation = windows.test, ~windows.test
                metrics = classifier_metrics(scores[validation], windows.targets[validation], scores[test], windows.targets[test])
                result[kind][label_kind] = {"label": label, **{m: metrics[m] for m in METRICS}}
                if label_kind == "label":
                    files[kind] = self.score_file(windows, scores, metrics["threshold"], marked if kind == "fuzz" else None,
                                                  source_tokenizer)
        return {"scores": result, "files": files}

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


def random_other_label(results: list[dict], index: int, seed: int) -> str | None:
    """A label of another latent of this run, drawn by the seed: what chance looks like for a label that names something."""
    others = [r["label"] for j, r in enumerate(results) if j != index and r.get("label")]
    return random.Random(f"{seed}:{results[index]['feature']}").choice(others) if others else None


def most_frequent_text(tokens: Sequence[int], tokenizer) -> str | None:
    """The most frequent top-activating token as delphi would be handed it, whatever it is: unlike a label, a
    baseline here need not be a word of the label vocabulary ("not", "the" and "his" are what many latents fire on)."""
    frequent = most_frequent_token(tokens, torch.ones(max(tokens, default=0) + 1, dtype=torch.bool))
    return None if frequent is None else (tokenizer.decode([frequent]).strip() or None)


def score_latents(scorer: DelphiScorer, features: list, results: list[dict], source_tokenizer, seed: int) -> None:
    """Detection and fuzzing of every labelled latent's label and baselines, into its result as `delphi`."""
    for index, (feature, entry) in enumerate(zip(features, results)):
        if not entry.get("label") or feature.windows is None:
            continue
        baselines = entry.get("baselines", {})
        labels = {"label": entry["label"], "random_other_latent": random_other_label(results, index, seed),
                  "most_frequent_top_activating": most_frequent_text(feature.top_activating_tokens, source_tokenizer),
                  "vocabulary_projection": (baselines.get("vocabulary_projection") or {}).get("label")}
        scored = scorer.score(feature.windows, labels, source_tokenizer)
        entry["delphi"] = {"scorer": scorer.scorer.loaded.name, "latent": feature.windows.latent,
                           "hookpoint": feature.windows.hookpoint, **scored["scores"]}
        entry["_delphi_files"] = scored["files"]
        log.info("%s: delphi detection balanced accuracy %s | fuzzing %s", entry["feature"],
                 {k: None if v is None or v["balanced_accuracy"] is None else round(v["balanced_accuracy"], 3)
                  for k, v in entry["delphi"]["detection"].items()},
                 {k: None if v is None or v["balanced_accuracy"] is None else round(v["balanced_accuracy"], 3)
                  for k, v in entry["delphi"]["fuzz"].items()})


def summary(results: list[dict]) -> dict | None:
    """Means over the scored latents, and per baseline on how many the label scored above it (balanced accuracy)."""
    scored = [r["delphi"] for r in results if r.get("delphi")]
    if not scored:
        return None
    out: dict = {"latents": len(scored)}
    for kind in KINDS:
        means = {}
        for label_kind in LABEL_KINDS:
            values = [s[kind][label_kind]["balanced_accuracy"] for s in scored
                      if s[kind].get(label_kind) and s[kind][label_kind]["balanced_accuracy"] is not None]
            means[label_kind] = sum(values) / len(values) if values else None
        above = {}
        for label_kind in LABEL_KINDS[1:]:
            above[label_kind] = sum(1 for s in scored if s[kind].get(label_kind) is None
                                    or s[kind][label_kind]["balanced_accuracy"] is None
                                    or s[kind]["label"]["balanced_accuracy"] > s[kind][label_kind]["balanced_accuracy"])
        above_all = sum(1 for s in scored if all(
            s[kind].get(k) is None or s[kind][k]["balanced_accuracy"] is None
            or s[kind]["label"]["balanced_accuracy"] > s[kind][k]["balanced_accuracy"] for k in LABEL_KINDS[1:]))
        out[kind] = {"mean_balanced_accuracy": means,
                     "mean_auroc": sum(s[kind]["label"]["auroc"] for s in scored) / len(scored),
                     "label_above_baseline": above, "label_above_every_baseline": above_all}
    return out


def write_files(output_dir: Path, features: list, results: list[dict], hookpoint_of, explanations: bool) -> None:
    """delphi's files beside results.json: explanations/<hookpoint>_latent<i>.txt (every labelled latent) and, where
    scored, scores/<detection|fuzz>/<hookpoint>_latent<i>.txt."""
    root = Path(output_dir) / "delphi"
    for feature, entry in zip(features, results):
        files = entry.pop("_delphi_files", None)
        place = hookpoint_of(feature)
        if place is None or not entry.get("label"):
            continue
        hookpoint, latent = place
        if explanations:
            explanation_file(root / "explanations", hookpoint, latent, entry["label"])
        for kind, rows in (files or {}).items():
            path = root / "scores" / kind / f"{hookpoint.replace('/', '--')}_latent{latent}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")


def table(results: list[dict]) -> tuple[list[str], list[list]]:
    """The W&B table: per latent the label, its top-activating tokens and each label kind's detection and fuzzing
    balanced accuracy and AUROC."""
    columns = ["feature", "label", "top_activating"] + [f"{kind}_{label_kind}_{metric}" for kind in KINDS
                                                        for label_kind in LABEL_KINDS for metric in ("balanced_accuracy", "auroc")]
    rows = []
    for r in results:
        if not r.get("delphi"):
            continue
        row = [r["feature"], r["label"], " ".join(r.get("top_activating", []))]
        for kind in KINDS:
            for label_kind in LABEL_KINDS:
                scores = r["delphi"][kind].get(label_kind) or {}
                row += [scores.get("balanced_accuracy"), scores.get("auroc")]
        rows.append(row)
    return columns, rows
