"""User-facing errors: one line that names the problem and the fix, and a non-zero exit."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)

FAILURE_FILE = "failure.json"


class GradspaceError(Exception):
    """A problem with the user's input or environment. Its message says what is wrong and what to do."""


def exit_on_user_error(fn: F) -> F:
    """Wrap a Hydra task function.

    A single run that hits a `GradspaceError` puts back the saved configs it replaced in its run directory, prints
    one line on stderr and exits with code 2. In a multirun the job's failure (any exception) is recorded as
    `failure.json` in its directory and re-raised: Hydra's launcher finishes the other jobs, then names the failed
    one and exits non-zero, and readers of the sweep directory can say why each missing job failed.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            from gradspace.utils.hydra_runtime import multirun_job_dir

            job_dir = multirun_job_dir()
            if job_dir is not None:
                from gradspace.utils.io import atomic_write_json

                atomic_write_json(job_dir / FAILURE_FILE, {"status": "failed", "error": f"{type(err).__name__}: {err}"})
                raise
            if isinstance(err, GradspaceError):
                from gradspace.utils.hydra_files import restore_run_files

                restore_run_files()
                print(f"error: {err}", file=sys.stderr)
                sys.exit(2)
            raise

    return wrapper  # type: ignore[return-value]


def job_failure(job_dir: Path) -> str | None:
    """The recorded failure of a sweep job, if it wrote one."""
    import json

    path = Path(job_dir) / FAILURE_FILE
    if not path.is_file():
        return None
    try:
        return str(json.loads(path.read_text(encoding="utf-8")).get("error"))
    except (OSError, ValueError):
        return None
