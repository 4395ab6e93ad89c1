"""What train.py refuses before it trains: settings the data, the model or the machine cannot carry, each one line
naming the fix, before any step (or the model's load, where the check does not need it)."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from gradspace.errors import GradspaceError
from gradspace.evaluation.logprobs import encode_with_prefix
from gradspace.ftgd.module import optimizer_setting_changes, optimizer_settings


def refuse_used_checkpoint_dirs(callbacks: list[L.Callback]) -> None:
    """A rerun into a run directory that holds checkpoints is refused: Lightning would add `last-v1.ckpt` beside the
    old `last.ckpt`, and resuming from `checkpoints/last.ckpt` would silently pick up the earlier run."""
    for callback in callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.dirpath and any(Path(callback.dirpath).glob("*.ckpt")):
            raise GradspaceError(
                f"{callback.dirpath} already holds the checkpoints of an earlier run, which this run would mix with "
                f"its own; nothing was changed: run in a new directory (leave hydra.run.dir at its default) or delete that folder"
            )


def check_resumed_optimizer(ckpt_path: Path, factory) -> None:
    """Refuse a checkpoint whose optimizer is of another class than the config's before the model loads (its state
    is memory-mapped, not read). A changed setting of the same optimizer is applied when the checkpoint loads."""
    try:
        checkpoint = torch.load(ckpt_path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as err:  # not a checkpoint torch can read: a truncated or foreign file
        raise GradspaceError(f"ckpt_path={ckpt_path} is not a readable checkpoint ({type(err).__name__}); point it at a "
                             f".ckpt from a previous run's checkpoints/") from None
    optimizer_setting_changes(checkpoint.get("optimizer_states", []), optimizer_settings(factory))


def check_batch_size(batch_size: int, task_data) -> None:
    """Refuse a step of more pairs than the task has: the batch would cycle the same pairs (`ftgd.batch_size=1e9`
    put 44 pairs a billion times into one batch and was killed by the kernel at 19 GB)."""
    available = len(task_data.train)
    if batch_size > available:
        raise GradspaceError(
            f"ftgd.batch_size={batch_size} is more than the {available} training pairs of task {', '.join(task_data.tasks)}; "
            f"set ftgd.batch_size=<integer <= {available}>"
        )


# Bytes per token and vocabulary entry of a pass: the float32 logits, their log-softmax and the gradient of each.
PASS_BYTES_PER_LOGIT = 4 * 4


def machine_memory_bytes(accelerator: str) -> int:
    """What one pass may use at most: the GPU's memory where the trainer runs on one, else the machine's RAM."""
    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_pass_memory(pairs_per_pass: int, longest_tokens: int, vocabulary: int, memory_bytes: int) -> None:
    """Refuse a pass whose log-probabilities alone (both sentences of every pair, padded to the longest, over the
    vocabulary) would not fit the machine, before the first batch asks for them."""
    needed = pairs_per_pass * 2 * longest_tokens * vocabulary * PASS_BYTES_PER_LOGIT
    if needed > memory_bytes:
        fitting = max(1, memory_bytes // (2 * longest_tokens * vocabulary * PASS_BYTES_PER_LOGIT))
        raise GradspaceError(
            f"a pass of {pairs_per_pass} pairs of up to {longest_tokens} tokens over a {vocabulary}-token vocabulary "
            f"needs about {needed / 2**30:.1f} GiB, more than this machine's {memory_bytes / 2**30:.1f} GiB; "
            f"set ftgd.micro_batch_size=<a divisor of ftgd.batch_size <= {fitting}>"
        )


def check_sentence_lengths(loaded, task_data, heldout: list[str], max_sentence_tokens: int) -> int:
    """Refuse any sentence longer than `ftgd.max_sentence_tokens` or the model's context (prefix included) before the
    first batch: a batch is padded to its longest sentence and scored over the whole vocabulary, so one 10 MB line
    would ask for tens of GB. Returns the longest training sentence's length."""
    tokenizer, context = loaded.tokenizer, getattr(loaded.model.config, "max_position_embeddings", None)
    max_tokens, limit = max_sentence_tokens, f"ftgd.max_sentence_tokens={max_sentence_tokens}"
    if context is not None and context < max_sentence_tokens:
        max_tokens, limit = context, f"the model's context ({context} tokens)"

    pairs = list(dict.fromkeys([*task_data.train, *task_data.eval_all]))
    train_pairs, longest_train = set(task_data.train), 0
    for which in ("good", "bad"):
        lengths = [len(ids) for ids in encode_with_prefix(tokenizer, [getattr(pair, which) for pair in pairs])]
        for pair, length in zip(pairs, lengths):
            if pair in train_pairs:
                longest_train = max(longest_train, length)
            if length > max_tokens:
                where = pair.source or f"pair {pair.id} of task {pair.task}"
                raise GradspaceError(
                    f"{where}: sentence_{which} has {length} tokens, more than {limit}; "
                    f"shorten or remove that pair, or raise ftgd.max_sentence_tokens"
                )
    for index, length in enumerate(len(ids) for ids in encode_with_prefix(tokenizer, heldout)):
        if length > max_tokens:
            raise GradspaceError(
                f"held-out sentence {index + 1} ('{heldout[index][:40]}...') has {length} tokens, more than "
                f"{limit}; shorten it (heldout.path) or raise ftgd.max_sentence_tokens"
            )
    return longest_train
