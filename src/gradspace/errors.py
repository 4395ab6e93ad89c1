"""User-facing errors: one line that names the problem and the fix, and a non-zero exit."""

from __future__ import annotations

import errno
import functools
import json
import sys
from pathlib import Path
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)
# gradspace.utils raises GradspaceError, so this module imports utils only inside the functions that run an entry point
# (at module level the two would import each other half-initialised).

FAILURE_FILE = "failure.json"


class GradspaceError(Exception):
    """A problem with the user's input or environment. Its message says what is wrong and what to do."""


def exit_on_user_error(fn: F) -> F:
    """Wrap a Hydra task function.

    A single run that hits a `GradspaceError` puts back the saved configs it replaced in its run directory, prints
    one line on stderr and exits with code 2. In a multirun the job's failure (any exception) is recorded as
    `failure.json` in its directory and re-raised: Hydra's launcher finishes the other jobs, then names the failed
    one and exits non-zero, and readers of the sweep directory can say why each missing job failed.

    SIGTERM and Ctrl-C stop the run (and a sweep: the signal is meant for the whole process) with one line saying
    so and exit code 143 or 130; a sweep job stopped that way is recorded as failed like any other.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        # not at the top: utils imports this module
        from gradspace.utils.termination import Terminated, sigterm_raises

        try:
            with sigterm_raises():
                return fn(*args, **kwargs)
        except (Terminated, KeyboardInterrupt) as stop:
            _exit_stopped(stop)
        except Exception as err:
            # not at the top: utils imports this module
            from gradspace.utils.hydra_runtime import multirun_job_dir

            err = _as_write_failure(err)
            job_dir = multirun_job_dir()
            if job_dir is not None:
                _record_failure(job_dir, f"{type(err).__name__}: {err}")
                raise
            if isinstance(err, GradspaceError):
                # not at the top: utils imports this module
                from gradspace.utils.hydra_files import restore_run_files

                restore_run_files()
                print(f"error: {err}", file=sys.stderr)
                sys.exit(2)
            raise

    return wrapper  # type: ignore[return-value]


# A full disk, a quota, the file-size limit (ulimit -f) or a read-only mount can stop any write, deep inside torch,
# Lightning or Hydra: the environment's problem, said in one line rather than a traceback from the writer.
WRITE_FAILURES = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def _as_write_failure(err: Exception) -> Exception:
    if not (isinstance(err, OSError) and err.errno in WRITE_FAILURES):
        return err
    # not at the top: utils imports this module
    from gradspace.utils.hydra_runtime import run_output_dir

    # Lightning's checkpoint writer names no file: the run directory or the cache is where it was writing.
    where = f"cannot write {err.filename}" if err.filename else f"a write into {run_output_dir()} or paths.cache_dir failed"
    return GradspaceError(f"{where} ({err.strerror}); no file was left half-written: free space (or raise the limit) and rerun, or write elsewhere with "
                          f"hydra.run.dir=<dir> and paths.cache_dir=<dir>")


def _record_failure(job_dir: Path, error: str) -> None:
    # not at the top: utils imports this module
    from gradspace.utils.io import atomic_write_json

    atomic_write_json(job_dir / FAILURE_FILE, {"status": "failed", "error": error})


def _exit_stopped(stop: BaseException) -> None:
    """One line for a run stopped by SIGTERM or Ctrl-C, with what was kept, and the shell's exit code for it."""
    # not at the top: utils imports this module
    from gradspace.utils.hydra_runtime import multirun_job_dir, run_output_dir
    from gradspace.utils.termination import SIGINT_EXIT_CODE, SIGTERM_EXIT_CODE, Terminated

    terminated = isinstance(stop, Terminated)
    output_dir = run_output_dir()
    kept = str(stop) or (f"; what finished is kept in {output_dir}" if output_dir else "")
    line = f"{Path(sys.argv[0]).name}: {'terminated by SIGTERM' if terminated else 'interrupted by Ctrl-C'}{kept}"
    job_dir = multirun_job_dir()
    if job_dir is not None:
        _record_failure(job_dir, f"{type(stop).__name__}: {line}")
        line += f" (the sweep stopped at job {job_dir.name})"
    print(line, file=sys.stderr)
    sys.exit(SIGTERM_EXIT_CODE if terminated else SIGINT_EXIT_CODE)


def job_failure(job_dir: Path) -> str | None:
    """The recorded failure of a sweep job, if it wrote one."""
    path = Path(job_dir) / FAILURE_FILE
    if not path.is_file():
        return None
    try:
        return str(json.loads(path.read_text(encoding="utf-8")).get("error"))
    except (OSError, ValueError):
        return None
