"""FTGD as a LightningModule: the objective gives the gradient differential, the hooks decide what it updates.

`training_step` runs good and bad sentences through the model in one padded forward pass; the objective's backward
leaves the (shaped) gradient differential in `.grad`. What happens to it lives in explicit hooks, so variants plug
in there rather than into the loss:
- `on_train_start`: a fixed mask is chosen from the differential summed over the first batches (all processes).
- `on_before_optimizer_step`: the differential is measured (`train/grad_norm`), a recomputed mask is refreshed from
  it, and the mask zeroes the gradient of every parameter entry that does not carry the task.
- `optimizer_step`: masked-out entries are held at their value, so optimizer state and weight decay cannot move them.
"""

from __future__ import annotations

from typing import Any, Callable

import lightning as L
import torch

from gradspace.errors import GradspaceError
from gradspace.ftgd.masks import MaskConfig, ParameterMask
from gradspace.ftgd.objectives import PairBatch, check_objective, objective_loss


class FTGDModule(L.LightningModule):
    def __init__(self, model: torch.nn.Module, objective: str, optimizer: Callable[..., torch.optim.Optimizer],
                 mask: MaskConfig) -> None:
        super().__init__()
        check_objective(objective)
        self.model = model
        self.model.train()  # from_pretrained returns eval mode; dropout, where a model has it, belongs to training
        self.objective = objective
        self.optimizer_factory = optimizer
        self.mask = ParameterMask(mask)
        self.optimizer_changes: dict[str, dict[str, Any]] = {}  # settings a resumed run changed, see on_load_checkpoint

    def named_trainable(self) -> list[tuple[str, torch.nn.Parameter]]:
        return [(name, param) for name, param in self.model.named_parameters() if param.requires_grad]

    def training_step(self, batch: PairBatch, batch_idx: int) -> torch.Tensor:
        loss, stats = objective_loss(self.model, batch, self.objective)
        if not torch.isfinite(loss):
            raise GradspaceError(
                f"non-finite training loss ({loss.item()}) at step {self.global_step} with objective={self.objective}; "
                f"lower optimizer.lr, or use objective=bounded (the plain difference is unbounded)"
            )
        self.log("train/loss", loss, prog_bar=True, batch_size=batch.n_pairs)
        for name, value in stats.items():
            self.log(f"train/{name}", value, batch_size=batch.n_pairs)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(params=[param for _, param in self.named_trainable()])

    # --- what the gradient differential updates --------------------------------------------------------------

    def on_train_start(self) -> None:
        config = self.mask.config
        if self.mask.ready:  # restored from a checkpoint, on the CPU
            self.mask.to(self.device)
        elif config.active and config.schedule == "fixed":
            passes = config.calibration_batches * self.trainer.accumulate_grad_batches  # the first steps' pairs
            self.mask.set_from_scores(self.calibration_differential(passes))
            self.log_mask_density()

    def calibration_differential(self, count: int) -> dict[str, torch.Tensor]:
        """The differential summed over the first `count` training batches, averaged over processes.

        Runs on the bare model, outside the DDP wrapper, so the reduction here is explicit; the parameters'
        gradients are cleared afterwards and the optimizer never sees them.
        """
        named = self.named_trainable()
        total = {name: torch.zeros_like(param) for name, param in named}
        for batch in self.trainer.datamodule.calibration_batches(count):
            self.model.zero_grad(set_to_none=True)
            loss, _ = objective_loss(self.model, batch.to(self.device), self.objective)
            loss.backward()
            for name, param in named:
                if param.grad is not None:
                    total[name] += param.grad
        self.model.zero_grad(set_to_none=True)
        if self.trainer.world_size > 1:
            total = {name: self.trainer.strategy.reduce(score, reduce_op="mean") for name, score in total.items()}
        return total

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Under DDP the gradients are already averaged over processes here, so every process picks the same mask.
        named = self.named_trainable()
        grads = [param.grad for _, param in named if param.grad is not None]
        self.log("train/grad_norm", torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
        if not self.mask.config.active:
            return
        if self.mask.due(self.global_step):
            self.mask.set_from_scores({name: torch.zeros_like(param) if param.grad is None else param.grad for name, param in named})
            self.log_mask_density()
        self.mask.mask_gradients(named)

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Callable | None = None) -> None:
        if not self.mask.config.active:
            return super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        named = self.named_trainable()
        before = self.mask.snapshot(named)  # the closure (forward, backward, hooks) leaves parameters unchanged
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        self.mask.restore_masked(named, before)

    def log_mask_density(self) -> None:
        for logger in self.loggers:
            logger.log_metrics({"train/mask_density": self.mask.density()}, step=self.global_step)

    # --- checkpoints carry the mask so a resumed run updates the same parameters -----------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["ftgd_mask"] = self.mask.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.mask.load_state_dict(checkpoint.get("ftgd_mask", {}))
        # Resuming keeps the checkpoint's optimizer state (Adam's moments) but takes the settings (lr, betas, ...)
        # from this run's config: Lightning would otherwise silently bring back the old ones while results.json
        # recorded the new.
        saved_states = checkpoint.get("optimizer_states", [])
        settings = optimizer_settings(self.optimizer_factory)
        self.optimizer_changes = optimizer_setting_changes(saved_states, settings)
        for state in saved_states:
            for group in state.get("param_groups", []):
                group.update(settings)


def optimizer_settings(factory: Callable[..., torch.optim.Optimizer]) -> dict[str, Any]:
    """Every setting (lr, betas, eps, ...) of the optimizer `factory` makes, defaults included."""
    group = factory(params=[torch.zeros(1, requires_grad=True)]).param_groups[0]
    return {key: value for key, value in group.items() if key != "params"}


def optimizer_setting_changes(saved_states: list[dict[str, Any]], settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{setting: {"checkpoint": old, "used": new}} for each of `settings` that differs in a checkpoint's optimizer
    states; refused when the checkpoint's optimizer is of another class (its state would not fit this one)."""
    changes: dict[str, dict[str, Any]] = {}
    for state in saved_states:
        for group in state.get("param_groups", []):
            saved = {key: value for key, value in group.items() if key != "params"}
            if saved.keys() != settings.keys():
                raise GradspaceError(
                    f"the checkpoint's optimizer has the settings {', '.join(sorted(saved))}, not those of this run's "
                    f"optimizer ({', '.join(sorted(settings))}); resume with the optimizer._target_ it was trained "
                    f"with, or start from the model without ckpt_path"
                )
            changes.update({key: {"checkpoint": _plain(saved[key]), "used": _plain(value)}
                            for key, value in settings.items() if _plain(saved[key]) != _plain(value)})
    return changes


def _plain(value: Any) -> Any:
    """A setting as JSON has it (betas are a tuple in the optimizer, a list in the config)."""
    return list(value) if isinstance(value, tuple) else value
