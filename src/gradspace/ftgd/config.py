"""The `ftgd` and `optimizer` sections of train.yaml as typed, validated configs, built before any model is loaded.

A wrong value (`ftgd.max_steps=0`, `optimizer.lr=-1`, text where a number goes) or a misspelt key is one line
naming the setting and the fix, instead of a traceback minutes into the run.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from omegaconf.errors import OmegaConfBaseException

from gradspace.errors import GradspaceError
from gradspace.ftgd.masks import MaskConfig
from gradspace.utils.run_config import config_from_section, missing_values, plain_section
from gradspace.utils.seeding import check_seed


def whole_number(value: Any, name: str, minimum: int) -> int:
    # bool is an int to Python, but `ftgd.max_steps=true` is a mistake, not the number 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise GradspaceError(f"{name}={value!r} is not a whole number; set {name}=<integer >= {minimum}>")
    if value < minimum:
        raise GradspaceError(f"{name}={value} must be at least {minimum}; set {name}=<integer >= {minimum}>")
    return value


def real_number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise GradspaceError(f"{name}={value!r} is not a number; set {name} to a number such as 1e-4")
    return float(value)


@dataclass
class FTGDConfig:
    max_steps: int  # optimizer steps (trainer.max_steps is set from it)
    batch_size: int  # minimal pairs per optimizer step, over all processes
    # Longest sentence (in tokens, prefix included) a pair may have. Batches are padded to their longest sentence and
    # scored over the whole vocabulary, so this bounds the memory of a batch: batch size x this x vocabulary.
    max_sentence_tokens: int
    mask: MaskConfig
    # Pairs per forward and backward pass (None: the whole batch). A step accumulates the gradient of
    # batch_size / micro_batch_size passes: the same update, with the activations of a smaller batch.
    micro_batch_size: int | None

    def __post_init__(self) -> None:
        whole_number(self.max_steps, "ftgd.max_steps", 1)
        whole_number(self.batch_size, "ftgd.batch_size", 1)
        whole_number(self.max_sentence_tokens, "ftgd.max_sentence_tokens", 2)
        if isinstance(self.mask, Mapping):
            self.mask = config_from_section(MaskConfig, self.mask, "ftgd.mask")
        if self.micro_batch_size is not None:
            whole_number(self.micro_batch_size, "ftgd.micro_batch_size", 1)
            if self.batch_size % self.micro_batch_size:
                raise GradspaceError(
                    f"ftgd.micro_batch_size={self.micro_batch_size} does not divide ftgd.batch_size={self.batch_size}; "
                    f"choose a divisor of it (or null for one pass per step)"
                )

    @property
    def pairs_per_pass(self) -> int:
        return self.micro_batch_size or self.batch_size

    @property
    def passes_per_step(self) -> int:
        return self.batch_size // self.pairs_per_pass


HELDOUT_SOURCES = ("auto", "synth", "text", "pairs")


@dataclass
class HeldoutConfig:
    """General text for the side effect of fine-tuning (LM loss before and after)."""

    source: str  # auto | synth | text | pairs
    path: str | None  # source=text (or auto): a text file, one sentence per line
    max_sentences: int | None

    def __post_init__(self) -> None:
        if self.source not in HELDOUT_SOURCES:
            raise GradspaceError(f"heldout.source='{self.source}' is unknown; use one of {', '.join(HELDOUT_SOURCES)}")
        if self.max_sentences is not None:
            whole_number(self.max_sentences, "heldout.max_sentences", 1)


@dataclass
class OptimizerConfig:
    """A `torch.optim` optimizer factory: its class path, the learning rate and the class's other arguments."""

    target: str
    lr: float
    options: dict[str, Any]

    @classmethod
    def from_section(cls, section) -> "OptimizerConfig":
        values = plain_section(section)
        target = values.pop("_target_", None)
        values.pop("_partial_", None)
        if "lr" not in values:
            raise GradspaceError("optimizer.lr is not set; add optimizer.lr=<learning rate>")
        return cls(target=str(target), lr=values.pop("lr"), options=values)

    def __post_init__(self) -> None:
        optimizer_class = self.optimizer_class()
        self.lr = real_number(self.lr, "optimizer.lr")
        if not self.lr > 0:
            raise GradspaceError(f"optimizer.lr={self.lr:g} must be positive; set optimizer.lr to e.g. 1e-5")
        # Only the optimizer's own arguments: a misspelt one would otherwise fail at the first step or be ignored.
        known = [name for name in inspect.signature(optimizer_class).parameters if name not in ("self", "params", "lr")]
        unknown = [key for key in self.options if key not in known]
        if unknown:
            raise GradspaceError(
                f"optimizer.{unknown[0]} is not an argument of {self.target}; the known ones are lr, {', '.join(known)}"
            )
        if "weight_decay" in self.options and real_number(self.options["weight_decay"], "optimizer.weight_decay") < 0:
            raise GradspaceError(f"optimizer.weight_decay={self.options['weight_decay']} must be >= 0")
        if "betas" in self.options:
            betas = self.options["betas"]
            if not (isinstance(betas, (list, tuple)) and len(betas) == 2
                    and all(0 <= real_number(beta, "optimizer.betas") < 1 for beta in betas)):
                raise GradspaceError(f"optimizer.betas={betas} must be two numbers in [0, 1), e.g. optimizer.betas=[0.9,0.999]")

    def optimizer_class(self) -> type:
        module_name, _, class_name = self.target.rpartition(".")
        try:
            optimizer_class = getattr(importlib.import_module(module_name), class_name) if module_name else None
        except ImportError:
            optimizer_class = None
        if not (inspect.isclass(optimizer_class) and issubclass(optimizer_class, torch.optim.Optimizer)):
            raise GradspaceError(f"optimizer._target_={self.target} is not a torch optimizer class; use e.g. torch.optim.AdamW")
        return optimizer_class

    def factory(self) -> functools.partial:
        """What FTGDModule takes: the optimizer class with every argument but the parameters."""
        options = {key: tuple(value) if isinstance(value, list) else value for key, value in self.options.items()}
        return functools.partial(self.optimizer_class(), lr=self.lr, **options)


@dataclass
class TrainSettings:
    """What train.py checks before it reads any data or loads a model."""

    ftgd: FTGDConfig
    optimizer: OptimizerConfig
    heldout: HeldoutConfig
    seed: int
    torch_threads: int | None



def check_train_config(cfg) -> TrainSettings:
    missing = missing_values(cfg)
    if missing:
        raise GradspaceError(f"{missing[0]} has no value; set it on the command line ({missing[0]}=...)")
    try:
        ftgd = config_from_section(FTGDConfig, cfg.ftgd, "ftgd")
        if cfg.trainer.get("accumulate_grad_batches", 1) != 1:
            raise GradspaceError(
                "trainer.accumulate_grad_batches is set from ftgd.batch_size / ftgd.micro_batch_size; "
                "remove it and set ftgd.micro_batch_size=<pairs per pass> instead"
            )
        optimizer = OptimizerConfig.from_section(cfg.optimizer)
        threads = cfg.get("torch_threads")
        heldout = config_from_section(HeldoutConfig, cfg.heldout, "heldout")
        return TrainSettings(ftgd=ftgd, optimizer=optimizer, heldout=heldout, seed=check_seed(cfg.seed),
                             torch_threads=None if threads is None else whole_number(threads, "torch_threads", 1))
    except OmegaConfBaseException as err:  # e.g. an interpolation that names a key that does not exist
        first_line = str(err).strip().splitlines()[0]
        raise GradspaceError(f"the config does not resolve ({first_line}); fix the setting it names") from None
