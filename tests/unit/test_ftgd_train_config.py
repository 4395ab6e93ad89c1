"""train.py's settings are checked before any data or model is touched: one line per mistake, naming the fix."""

import functools
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from gradspace.errors import GradspaceError
from gradspace.ftgd.config import FTGDConfig, check_train_config

pytestmark = pytest.mark.unit

CONF = Path(__file__).resolve().parents[2] / "conf"


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=["paths.output_dir=/unused", *overrides])


def test_shipped_config_passes_and_builds_the_optimizer():
    settings = check_train_config(compose_train("model=synth-1m", "optimizer.weight_decay=0.1"))
    assert settings.ftgd == FTGDConfig(max_steps=30, batch_size=16, max_sentence_tokens=256, mask=settings.ftgd.mask,
                                     micro_batch_size=None)
    assert settings.seed == 0 and settings.torch_threads is None
    factory = settings.optimizer.factory()
    assert isinstance(factory, functools.partial)  # picklable, unlike a lambda
    optimizer = factory(params=[torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.defaults["lr"] == 3e-4 and optimizer.defaults["weight_decay"] == 0.1
    assert optimizer.defaults["betas"] == (0.9, 0.999)


@pytest.mark.parametrize("overrides, message", [
    (["ftgd.max_steps=0"], r"^ftgd\.max_steps=0 must be at least 1; set ftgd\.max_steps=<integer >= 1>$"),
    (["ftgd.batch_size=0"], r"^ftgd\.batch_size=0 must be at least 1"),
    (["ftgd.max_steps=abc"], r"^ftgd\.max_steps='abc' is not a whole number"),
    (["ftgd.max_steps=2.5"], r"^ftgd\.max_steps=2\.5 is not a whole number"),
    (["ftgd.max_sentence_tokens=1"], r"^ftgd\.max_sentence_tokens=1 must be at least 2"),
    (["ftgd.batch_size=8", "ftgd.micro_batch_size=3"], r"^ftgd\.micro_batch_size=3 does not divide ftgd\.batch_size=8; choose a divisor"),
    (["ftgd.micro_batch_size=0"], r"^ftgd\.micro_batch_size=0 must be at least 1"),
    (["+trainer.accumulate_grad_batches=2"], r"^trainer\.accumulate_grad_batches is set from ftgd\.batch_size / ftgd\.micro_batch_size"),
    (["seed=x"], r"^seed='x' is not a whole number in 0..4294967295 \(seeds are 32-bit\); set seed=<integer 0..4294967295>$"),
    (["torch_threads=0"], r"^torch_threads=0 must be at least 1"),
    (["optimizer.lr=-1"], r"^optimizer\.lr=-1 must be positive; set optimizer\.lr to e\.g\. 1e-5$"),
    (["optimizer.lr=fast"], r"^optimizer\.lr='fast' is not a number"),
    (["optimizer.weight_decay=-0.1"], r"^optimizer\.weight_decay=-0\.1 must be >= 0$"),
    (["optimizer.betas=[0.9,2]"], r"^optimizer\.betas=\[0\.9, 2\] must be two numbers in \[0, 1\)"),
    (["+optimizer.momentun=0.9"], r"^optimizer\.momentun is not an argument of torch\.optim\.AdamW; the known ones are lr, betas"),
    (["optimizer._target_=torch.nn.Linear"], r"^optimizer\._target_=torch\.nn\.Linear is not a torch optimizer class"),
    (["+ftgd.max_step=3"], r"^ftgd\.max_step is not a setting of ftgd; the known ones are max_steps, batch_size"),
    (["+ftgd.mask.densty=0.1"], r"^ftgd\.mask\.densty is not a setting of ftgd\.mask"),
    (["ftgd.mask.kind=top"], r"^invalid ftgd\.mask: kind='top'"),
    (["task=paradigm"], r"^task\.name has no value; set it on the command line \(task\.name=\.\.\.\)$"),
    (["model.source=elsewhere"], r"^the config does not resolve \(.*budget_by_source"),
    (["heldout.source=web"], r"^heldout\.source='web' is unknown; use one of auto, synth, text, pairs$"),
    (["+heldout.pth=x"], r"^heldout\.pth is not a setting of heldout"),
])
def test_bad_setting_is_one_line(overrides, message):
    with pytest.raises(GradspaceError, match=message) as error:
        check_train_config(compose_train(*overrides))
    assert "\n" not in str(error.value)
