"""The data of one FTGD run: the training pair stream, every task's eval pairs, and held-out general text.

Training batches are indexed by optimizer step: batch k is a fixed function of (seed, k, rank), so a run resumed
from a checkpoint at step k sees exactly the batches the uninterrupted run saw, and `batch_size` is the global
number of pairs per step however many processes share it (the DDP gradient mean then equals the one-process one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Mapping

import lightning as L
import torch

from gradspace.data.suite import TaskData
from gradspace.errors import GradspaceError
from gradspace.ftgd.config import HeldoutConfig
from gradspace.ftgd.objectives import PairBatch, check_objective, collate_pairs
from gradspace.pairs import MinimalPair
from gradspace.synth.world import world_for_model


class StepIndexedPairBatches:
    """Endless batches of training pairs; epoch e visits the pairs in a permutation seeded by (seed, e)."""

    def __init__(self, tokenizer, pairs: list[MinimalPair], objective: str, global_batch_size: int, seed: int,
                 rank: int = 0, world_size: int = 1, start_batch: int = 0) -> None:
        if global_batch_size % world_size:
            raise GradspaceError(
                f"a pass of {global_batch_size} pairs (ftgd.micro_batch_size, or else ftgd.batch_size) is not divisible by "
                f"the {world_size} training processes; set it to a multiple of trainer.devices"
            )
        self.tokenizer, self.pairs, self.objective = tokenizer, pairs, objective
        self.global_batch_size, self.seed = global_batch_size, seed
        self.rank, self.world_size, self.start_batch = rank, world_size, start_batch
        self.per_rank = global_batch_size // world_size
        self._orders: dict[int, list[int]] = {}

    def _pair_at(self, position: int) -> MinimalPair:
        epoch, offset = divmod(position, len(self.pairs))
        if epoch not in self._orders:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._orders = {epoch: torch.randperm(len(self.pairs), generator=generator).tolist()}
        return self.pairs[self._orders[epoch][offset]]

    def pairs_of_batch(self, index: int) -> list[MinimalPair]:
        first = index * self.global_batch_size + self.rank * self.per_rank
        return [self._pair_at(position) for position in range(first, first + self.per_rank)]

    def __iter__(self) -> Iterator[PairBatch]:
        index = self.start_batch
        while True:
            yield collate_pairs(self.tokenizer, self.pairs_of_batch(index), self.objective)
            index += 1


class FTGDDataModule(L.LightningDataModule):
    def __init__(self, tokenizer, task_data: TaskData, heldout_sentences: list[str], objective: str,
                 batch_size: int, seed: int) -> None:
        super().__init__()
        check_objective(objective)
        self.tokenizer = tokenizer
        self.task_data = task_data
        self.heldout_sentences = heldout_sentences
        self.objective = objective
        self.batch_size = int(batch_size)
        self.seed = int(seed)

    @property
    def eval_pairs(self) -> list[MinimalPair]:
        """The eval pairs of every task of the suite: before/after accuracy on all of them is the transfer row."""
        return self.task_data.eval_all

    def batches(self, start_batch: int = 0) -> StepIndexedPairBatches:
        trainer = self.trainer
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        return StepIndexedPairBatches(self.tokenizer, self.task_data.train, self.objective, self.batch_size,
                                      self.seed, rank=rank, world_size=world_size, start_batch=start_batch)

    def train_dataloader(self) -> StepIndexedPairBatches:
        # Restored before the loop asks for data, so a resumed run continues at the batch after its checkpoint.
        start = self.trainer.global_step * self.trainer.accumulate_grad_batches
        return self.batches(start_batch=start)

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        return batch.to(device) if isinstance(batch, PairBatch) else super().transfer_batch_to_device(batch, device, dataloader_idx)

    def calibration_batches(self, count: int) -> list[PairBatch]:
        """The first `count` training batches of this process: the data a fixed mask is chosen from."""
        iterator = iter(self.batches(start_batch=0))
        return [next(iterator) for _ in range(count)]


def heldout_sentences(heldout: HeldoutConfig, model_cfg: Mapping, task_data: TaskData, cache_dir: Path) -> list[str]:
    """General text to measure side effects on: the LM loss on it before and after fine-tuning.

    `auto` is the synthetic world's held-out corpus for synthetic models (text from the pretraining distribution
    the model never saw), else `text` when `heldout.path` is set, else `pairs`: good sentences of the reserved
    pairs of every task (`data.reserve_fraction`), none of which occurs in a pair that is trained or evaluated on.
    """
    source = heldout.source
    if source == "auto":
        source = "synth" if model_cfg.get("source") == "synth" else ("text" if heldout.path else "pairs")
    limit = heldout.max_sentences
    if source == "synth":
        if model_cfg.get("source") != "synth":
            raise GradspaceError("heldout.source=synth needs a synthetic model; use heldout.source=text or pairs")
        sentences = world_for_model(model_cfg, cache_dir).heldout_corpus[:limit]
    elif source == "text":
        path = heldout.path
        if not path or not Path(path).expanduser().is_file():
            raise GradspaceError(f"heldout.path={path!r} is not a file; give a text file with one sentence per line")
        try:
            # utf-8-sig: a byte-order mark (Windows editors write one) is no part of the first sentence.
            lines = Path(path).expanduser().read_text(encoding="utf-8-sig").splitlines()
        except UnicodeDecodeError as err:
            raise GradspaceError(f"heldout.path={path}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset "
                                 f"{err.start}); save the file as UTF-8") from None
        sentences = [line.strip() for line in lines if line.strip()][:limit]
    else:
        sentences = task_data.heldout_pair_sentences(limit)
    if not sentences:
        hint = "raise data.reserve_fraction" if source == "pairs" else "raise heldout.max_sentences"
        raise GradspaceError(f"the held-out text ({source}) is empty; give heldout.path=<text file> or {hint}")
    return sentences
