"""The training bar of step-budgeted runs (train.py's FTGD, label.py's soft labels).

Both stream batches without end and stop at `max_steps` with `max_epochs=-1`, so Lightning's rich bar would print its
epoch budget as "Epoch 0/-2". This bar says what is counted instead, and keeps the stock bar's step total and times.
"""
from __future__ import annotations

from lightning.pytorch.callbacks import ProgressBar, RichProgressBar


class StepProgressBar(RichProgressBar):
    def __init__(self, description: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.description = description

    # Lightning's hook for the training bar's text (the only place the epoch budget is printed).
    def _get_train_description(self, current_epoch: int) -> str:
        return f"{self.description:{len(self.validation_description)}}"


def with_step_progress_bar(callbacks: list, trainer_config, description: str) -> list:
    """`callbacks` with a `StepProgressBar`, unless the trainer's bar is off or the callbacks bring their own."""
    if not trainer_config.get("enable_progress_bar", True) or any(isinstance(cb, ProgressBar) for cb in callbacks):
        return list(callbacks)
    return [*callbacks, StepProgressBar(description)]
