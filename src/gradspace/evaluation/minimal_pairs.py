"""Batched, length-sorted minimal-pair evaluation.

A sentence's score is the sum of its token log-probabilities given the model's document-start token
(`prefix_token_id`), the lm-evaluation-harness convention for BLiMP; a pair is right when the good sentence scores higher.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

import torch

from gradspace.pairs import MinimalPair
from gradspace.evaluation.logprobs import scored_batches
from gradspace.evaluation.metrics import MinimalPairScore


@dataclass
class TaskScore:
    accuracy: float
    margin: float
    pairs: int


@dataclass
class EvaluationResult:
    tasks: dict[str, TaskScore]
    phenomena: dict[str, str]  # task -> phenomenon
    pairs_per_second: float
    overall: TaskScore = field(init=False)

    def __post_init__(self) -> None:
        total = sum(score.pairs for score in self.tasks.values())
        self.overall = TaskScore(
            accuracy=sum(s.accuracy * s.pairs for s in self.tasks.values()) / max(total, 1),
            margin=sum(s.margin * s.pairs for s in self.tasks.values()) / max(total, 1),
            pairs=total,
        )

    def as_metrics(self, prefix: str) -> dict[str, float]:
        """Flat `prefix/accuracy/<task>`-style keys for loggers, plus the overall scores."""
        metrics = {f"{prefix}/accuracy": self.overall.accuracy, f"{prefix}/margin": self.overall.margin}
        for task, score in self.tasks.items():
            metrics[f"{prefix}/accuracy/{task}"] = score.accuracy
            metrics[f"{prefix}/margin/{task}"] = score.margin
        return metrics

    def to_dict(self) -> dict:
        return {
            "overall": vars(self.overall),
            "tasks": {task: vars(score) for task, score in self.tasks.items()},
            "phenomena": dict(self.phenomena),
            "pairs_per_second": self.pairs_per_second,
        }


def score_sentences(model, tokenizer, sentences: list[str], batch_size: int = 64, desc: str | None = None) -> torch.Tensor:
    """Summed log-probability of every sentence, computed in length-sorted batches (little padding)."""
    scores = torch.empty(len(sentences), dtype=torch.float64)
    for chunk, logprobs, _ in scored_batches(model, tokenizer, sentences, batch_size, desc):
        scores[chunk] = logprobs.sum(dim=-1).double().cpu()
    return scores


def evaluate_pairs(model, tokenizer, pairs: list[MinimalPair], batch_size: int = 64, desc: str | None = None) -> EvaluationResult:
    """Accuracy and mean margin per task; the model is put in eval mode and restored afterwards."""
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    sentences = [pair.good for pair in pairs] + [pair.bad for pair in pairs]
    scores = score_sentences(model, tokenizer, sentences, batch_size=batch_size, desc=desc)
    elapsed = time.perf_counter() - start
    model.train(was_training)

    good, bad = scores[: len(pairs)], scores[len(pairs) :]
    by_task: dict[str, list[int]] = defaultdict(list)
    for index, pair in enumerate(pairs):
        by_task[pair.task].append(index)
    tasks = {}
    for task, indices in by_task.items():
        # Every process scores the full list, so summing across processes would count each pair once per process.
        metric = MinimalPairScore(sync_on_compute=False)
        metric.update(good[indices], bad[indices])
        computed = metric.compute()
        tasks[task] = TaskScore(float(computed["accuracy"]), float(computed["margin"]), int(computed["pairs"]))
    phenomena = {pair.task: pair.phenomenon for pair in pairs}
    return EvaluationResult(tasks=tasks, phenomena=phenomena, pairs_per_second=len(pairs) / max(elapsed, 1e-9))
