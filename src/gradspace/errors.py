"""User-facing errors: one line that names the problem and the fix, and a non-zero exit."""

from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)


class GradspaceError(Exception):
    """A problem with the user's input or environment. Its message says what is wrong and what to do."""


def exit_on_user_error(fn: F) -> F:
    """Turn a `GradspaceError` raised by an entry point into one line on stderr and exit code 2.

    Hydra wraps exceptions raised inside the task function, so entry scripts decorate the function
    they pass to `hydra.main` with this, and the user sees the message rather than a traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except GradspaceError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]
