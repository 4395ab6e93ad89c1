"""How an entry point stops when told to: SIGTERM (`kill`, a scheduler's time limit, a container stop) or Ctrl-C.

Either way it prints one line saying so and what was kept, and exits with the shell's code for the signal (143,
130), so that a scheduler or a script sees a failed run rather than a finished one with no results. A training
run stops at the end of its current batch, where its state is consistent, and saves a checkpoint to resume from.
"""

from __future__ import annotations

import contextlib
import signal
from typing import Iterator

SIGTERM_EXIT_CODE = 128 + signal.SIGTERM
SIGINT_EXIT_CODE = 128 + signal.SIGINT


class Terminated(BaseException):
    """SIGTERM arrived. A BaseException, as KeyboardInterrupt is, so that no `except Exception` carries on past it.

    Its message, when it has one, continues the line `<script>: terminated by SIGTERM` with what was kept.
    """


# The trainer whose fit is running, if any: Lightning's own SIGTERM handler (called before ours) then asks its loop
# to stop at the end of the batch, and raising here would interrupt the step half done.
_fitting = None


def _raise_terminated(signum, frame) -> None:
    if _fitting is not None and _fitting.received_sigterm:
        return
    raise Terminated()


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """While inside, SIGTERM raises `Terminated` in the main thread instead of killing the process on the spot."""
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def stopping_at_batch_end(trainer) -> Iterator[None]:
    """Around `trainer.fit`: a SIGTERM during training lets the current batch finish (Lightning then raises its
    SIGTERMException); one before training starts or during a measurement raises `Terminated` at once."""
    global _fitting
    _fitting = trainer
    try:
        yield
    finally:
        _fitting = None
