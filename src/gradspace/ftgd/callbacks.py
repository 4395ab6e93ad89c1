"""Measurements taken around fine-tuning: every task's accuracy and margin, and the LM loss on held-out text.

Both callbacks measure once when fitting starts and once when training ends (before the strategy's teardown moves
the model off the accelerator, and after dropping the gradients and optimizer state, which that measurement does not
need). The "before" values travel in checkpoints, so a resumed run still compares against
the model it started from, and a probe hands the measurements of its unchanged checkpoint to every copy it
fine-tunes from it (`BaseMeasurement`) instead of repeating them. Metric names are stable:
`eval_before/{accuracy,margin}[/<task>]`, `eval_after/...`, `transfer/<task>` (accuracy after - before),
`transfer_margin/<task>`, `heldout/lm_loss_{before,after,delta}` and `heldout/perplexity_{before,after}`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import hydra
import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig

from gradspace.errors import GradspaceError
from gradspace.evaluation.logprobs import scored_batches
from gradspace.evaluation.minimal_pairs import EvaluationResult, evaluate_pairs
from gradspace.ftgd.results import TrainResults
from gradspace.pairs import MinimalPair, pairs_fingerprint
from gradspace.utils.cache import fingerprint


def _log(trainer: L.Trainer, metrics: dict[str, float]) -> None:
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=trainer.global_step)


def _require_finite(values: dict[str, float], when: str) -> None:
    bad = sorted(name for name, value in values.items() if not math.isfinite(value))
    if bad:
        raise GradspaceError(
            f"non-finite {when} ({', '.join(bad[:5])}); the model's weights diverged: lower optimizer.lr "
            f"or use objective=bounded"
        )


def release_training_state(trainer: L.Trainer, pl_module: L.LightningModule) -> None:
    """Drop the gradients and the optimizer state before the after-training measurements, which need neither: the
    checkpoint that keeps them is written before `on_train_end`. For Gemma-3-270M they are 3.2 GB, which the
    measurements' batches would otherwise be added to."""
    pl_module.zero_grad(set_to_none=True)
    for optimizer in trainer.optimizers:
        optimizer.state.clear()


def task_scores(result: EvaluationResult) -> dict[str, dict[str, float]]:
    return {task: {"accuracy": s.accuracy, "margin": s.margin, "pairs": s.pairs} for task, s in result.tasks.items()}


@dataclass(frozen=True)
class BaseMeasurement:
    """The "before" side of both callbacks, measured on a model before any training. A probe fine-tunes one copy per
    task from one checkpoint; measuring that unchanged model again for every copy was about a quarter of its time.
    `key` (`base_key`) names what the numbers depend on; a run whose own key differs measures afresh."""

    key: str
    eval_before: dict[str, dict[str, float]]
    heldout_before: float

    @classmethod
    def of_results(cls, results: TrainResults) -> "BaseMeasurement":
        """From the results of a run of the same checkpoint."""
        return cls(results.base_key, results.eval_before, results.heldout_lm_loss["before"])


def base_key(model_cfg: Any, eval_pairs: Sequence[MinimalPair], heldout_sentences: Sequence[str],
             transfer: "TransferEvaluation", heldout: "HeldoutLoss") -> str:
    """The model (its config names the weights), the eval pairs, the held-out text and the batch sizes, which fix
    how sentences are padded together."""
    return fingerprint(model_cfg, pairs_fingerprint(eval_pairs), list(heldout_sentences), transfer.batch_size, heldout.batch_size)


class BeforeAndAfter(L.Callback):
    """A measurement of the model before training and after it. The before is saved in checkpoints, so a resumed run
    (or a probe's copy, from its checkpoint) keeps the measurement of the model it started from."""

    def __init__(self, batch_size: int = 64) -> None:
        self.batch_size = int(batch_size)
        self.before: Any = None
        self.after: Any = None

    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule, when: str) -> Any:
        """The measurement at `when` ("before" or "after"), logged."""
        raise NotImplementedError

    def log_change(self, trainer: L.Trainer) -> None:
        """Log after − before."""
        raise NotImplementedError

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.before is None:
            self.before = self.measure(trainer, pl_module, "before")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        release_training_state(trainer, pl_module)
        self.after = self.measure(trainer, pl_module, "after")
        self.log_change(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {"before": self.before}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.before = state_dict["before"]


class TransferEvaluation(BeforeAndAfter):
    """Accuracy and margin on the eval pairs of every task before and after training: the transfer row."""

    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule, when: str) -> dict[str, dict[str, float]]:
        datamodule, prefix = trainer.datamodule, f"eval_{when}"
        result = evaluate_pairs(pl_module.model, datamodule.tokenizer, datamodule.eval_pairs, self.batch_size,
                                desc=f"eval {when} ({len(datamodule.eval_pairs)} pairs)")
        metrics = result.as_metrics(prefix)
        _require_finite(metrics, f"{prefix} scores")
        _log(trainer, metrics)
        return task_scores(result)

    def log_change(self, trainer: L.Trainer) -> None:
        metrics = {}
        for task, delta in self.transfer().items():
            metrics[f"transfer/{task}"] = delta["accuracy"]
            metrics[f"transfer_margin/{task}"] = delta["margin"]
        _log(trainer, metrics)

    def transfer(self) -> dict[str, dict[str, float]]:
        if self.before is None or self.after is None:
            raise RuntimeError("transfer() needs both the before and the after evaluation")
        return {
            task: {key: self.after[task][key] - self.before[task][key] for key in ("accuracy", "margin")}
            for task in self.after
        }


def heldout_lm_loss(model, tokenizer, sentences: list[str], batch_size: int = 64, desc: str | None = None) -> float:
    """Token-mean negative log-likelihood (nats) of the sentences, each scored after the document-start token."""
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    for _, logprobs, batch in scored_batches(model, tokenizer, sentences, batch_size, desc):
        total -= float(logprobs.double().sum())
        tokens += int(batch.score_mask.sum())
    model.train(was_training)
    return total / max(tokens, 1)


class HeldoutLoss(BeforeAndAfter):
    """LM loss on general held-out text before and after training: the side effect of fine-tuning."""

    def measure(self, trainer: L.Trainer, pl_module: L.LightningModule, when: str) -> float:
        datamodule = trainer.datamodule
        loss = heldout_lm_loss(pl_module.model, datamodule.tokenizer, datamodule.heldout_sentences, self.batch_size,
                               desc=f"held-out loss {when}")
        _require_finite({f"heldout/lm_loss_{when}": loss}, "held-out LM loss")
        _log(trainer, {f"heldout/lm_loss_{when}": loss, f"heldout/perplexity_{when}": math.exp(min(loss, 700.0))})
        return loss

    def log_change(self, trainer: L.Trainer) -> None:
        _log(trainer, {"heldout/lm_loss_delta": self.after - self.before})

    def summary(self) -> dict[str, float]:
        if self.before is None or self.after is None:
            raise RuntimeError("summary() needs both the before and the after measurement")
        return {"before": self.before, "after": self.after, "delta": self.after - self.before}


def build_callbacks(cfg: DictConfig) -> tuple[list[L.Callback], TransferEvaluation, HeldoutLoss]:
    callbacks = [hydra.utils.instantiate(node) for node in (cfg.get("callbacks") or {}).values() if node and "_target_" in node]
    if not cfg.trainer.get("enable_checkpointing", True):  # probe's copies: checkpointing off wins over the callbacks
        callbacks = [cb for cb in callbacks if not isinstance(cb, ModelCheckpoint)]
    transfer = [cb for cb in callbacks if isinstance(cb, TransferEvaluation)]
    heldout = [cb for cb in callbacks if isinstance(cb, HeldoutLoss)]
    if len(transfer) != 1 or len(heldout) != 1:
        raise GradspaceError(
            "an FTGD run needs exactly one TransferEvaluation and one HeldoutLoss callback (the results are built "
            "from them); use callbacks=default or add them to your callbacks config"
        )
    return callbacks, transfer[0], heldout[0]
