"""The training bar of step-budgeted runs shows what it counts and the step total, not Lightning's "Epoch 0/-2"."""

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, IterableDataset

from gradspace.utils.progress import StepProgressBar, with_step_progress_bar

pytestmark = pytest.mark.unit


class EndlessZeros(IterableDataset):
    def __iter__(self):
        while True:
            yield torch.zeros(2)


class TinyRegression(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_index):
        return self.layer(batch).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_step_budgeted_run_prints_its_description_and_step_total(capfd):
    # train.py and label.py run exactly like this: an endless stream, max_steps, max_epochs=-1
    trainer_config = OmegaConf.create({"max_steps": 5, "max_epochs": -1})
    trainer = L.Trainer(max_steps=5, max_epochs=-1, logger=False, enable_checkpointing=False, enable_model_summary=False,
                        callbacks=with_step_progress_bar([], trainer_config, "FTGD steps"))
    trainer.fit(TinyRegression(), DataLoader(EndlessZeros(), batch_size=1))
    printed = capfd.readouterr().out
    assert "FTGD steps" in printed and "5/5" in printed
    assert "Epoch" not in printed


def test_no_bar_is_added_when_the_trainer_turns_it_off_or_the_callbacks_bring_one():
    assert with_step_progress_bar([], OmegaConf.create({"enable_progress_bar": False}), "steps") == []
    own = StepProgressBar("mine")
    assert with_step_progress_bar([own], OmegaConf.create({}), "steps") == [own]
