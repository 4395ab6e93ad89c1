"""How a training run stops early: SIGTERM saves a checkpoint to resume from at a batch boundary, Ctrl-C says where
training stopped; both as one line instead of Lightning's silent exits."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

from gradspace.ftgd.datamodule import FTGDDataModule
from gradspace.ftgd.module import FTGDModule
from gradspace.utils.termination import Terminated, stopping_at_batch_end


def fit_or_stop(trainer: L.Trainer, module: FTGDModule, datamodule: FTGDDataModule, ckpt_path: str | None,
                max_steps: int) -> None:
    """`trainer.fit`, except that SIGTERM or Ctrl-C during it raise `Terminated` or `KeyboardInterrupt` saying where
    training stopped: Lightning turns the one into its SIGTERMException (a SystemExit, exit code 0) and the other
    into exit code 1, both silent."""
    try:
        with stopping_at_batch_end(trainer):
            trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path or None, weights_only=True)
    except SIGTERMException:
        raise Terminated(stopped_at(trainer, max_steps, save_resume_checkpoint(trainer))) from None
    except SystemExit:
        if trainer.interrupted:  # Ctrl-C, which Lightning catches and turns into sys.exit(1)
            raise KeyboardInterrupt(stopped_at(trainer, max_steps, None)) from None
        raise
    if trainer.received_sigterm:  # during the last batch or the measurement after training: the run is complete
        raise Terminated(stopped_at(trainer, max_steps, last_checkpoint(trainer)))


def save_resume_checkpoint(trainer: L.Trainer) -> str | None:
    """After Lightning stopped the loop for SIGTERM at the end of a batch: that state saved as the run's
    `last.ckpt` (replacing its link to the newest periodic checkpoint), unless checkpointing is off."""
    callback = trainer.checkpoint_callback
    if callback is None or not callback.dirpath or trainer.global_step == 0:
        return None
    path = Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
    partial = path.with_name(f".{path.name}.partial")
    trainer.save_checkpoint(partial, weights_only=False)
    partial.replace(path)  # a second SIGTERM during the save leaves the earlier last.ckpt intact
    return str(path)


def stopped_at(trainer: L.Trainer, max_steps: int, checkpoint: str | None) -> str:
    """How a stopped training run continues the line `train.py: terminated by SIGTERM`."""
    if trainer.global_step == 0:
        return " before the first step; nothing to resume: run the command again"
    where = f" after step {trainer.global_step} of {max_steps}"
    if checkpoint is None:
        kept = last_checkpoint(trainer)
        return f"{where}; " + (f"the last saved checkpoint is {kept}" if kept else "no checkpoint was saved (checkpointing is off)")
    return f"{where}; resume with ckpt_path={checkpoint}"


def last_checkpoint(trainer: L.Trainer) -> str | None:
    callback = trainer.checkpoint_callback
    if callback is None:
        return None
    return callback.last_model_path or callback.best_model_path or None
