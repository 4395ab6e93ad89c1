"""What Hydra writes beside a run, made safe: the run directory is checked before anything starts and locked while
the job runs, the saved configs (`.hydra/config.yaml`, `hydra.yaml`, `overrides.yaml`, a sweep's `multirun.yaml`)
carry no secrets, and a job refused for bad input leaves the earlier configs as they were.

Hydra saves the configs as given, so a `+my_token=...` override would sit in plain text in four files. The shipped
`hydra` config turns Hydra's own saving off (`output_subdir: null`) and `SafeRunFiles` writes the same files with
secret-named keys and their values redacted.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from gradspace.utils.io import atomic_write_text
from gradspace.utils.run_config import environment_secrets, redact_values, scrub_override, scrub_secrets, secret_values

HYDRA_SUBDIR = ".hydra"
LOCK_FILE = ".gradspace.lock"

# Per job of this process: the open lock file of its directory, and what each saved config held before the job.
_held_locks: dict[Path, int] = {}
_replaced_files: dict[Path, bytes | None] = {}


def check_writable(directory: str | Path, setting: str) -> None:
    """Exit with one line (code 2) if `directory` cannot be created or written to; creates it otherwise."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as err:
        print(f"error: cannot write to {directory} ({err.strerror or err}); choose a writable directory with "
              f"{setting}=<dir> (or paths.log_dir=<dir>)", file=sys.stderr)
        sys.exit(2)


def safe_config_files(config: DictConfig) -> dict[str, Any]:
    """The three files Hydra saves for a job, as plain data without secrets: name -> content."""
    hydra_node = OmegaConf.to_container(config.hydra, resolve=False)
    task = OmegaConf.to_container(config, resolve=False)
    task.pop("hydra", None)
    secrets = (secret_values(task) | secret_values(hydra_node["overrides"]["task"])
               | secret_values(hydra_node["overrides"]["hydra"]) | environment_secrets())
    hydra_node["overrides"] = {kind: [scrub_override(item) for item in items] for kind, items in hydra_node["overrides"].items()}
    return {
        "config.yaml": redact_values(scrub_secrets(task), secrets),
        "hydra.yaml": redact_values({"hydra": scrub_secrets(hydra_node)}, secrets),
        "overrides.yaml": redact_values(hydra_node["overrides"]["task"], secrets),
    }


def write_yaml(path: Path, content: Any) -> None:
    atomic_write_text(path, OmegaConf.to_yaml(OmegaConf.create(content)))


def lock_job_directory(directory: Path, setting: str) -> None:
    """Exit with one line (code 2) if another process runs in `directory`; else hold its lock until the job ends.

    Two runs in one directory would write each other's checkpoints (`last-v1.ckpt`) and results. The kernel drops
    the lock when the process ends, however it ends, so a killed run leaves no stale lock behind.
    """
    directory.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(descriptor, 32).decode(errors="replace").strip()
        os.close(descriptor)
        print(f"error: {directory} is in use by another run (process {holder or 'unknown'}); nothing was changed: "
              f"wait for it to finish or choose another directory with {setting}=<dir>", file=sys.stderr)
        sys.exit(2)
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"{os.getpid()}\n".encode())
    _held_locks[directory] = descriptor


def unlock_job_directory(directory: Path) -> None:
    descriptor = _held_locks.pop(directory, None)
    if descriptor is not None:
        os.close(descriptor)


def restore_run_files() -> None:
    """Put back the saved configs the current job replaced (removing those it created): a run refused for bad input
    says nothing was changed, and its settings were never used."""
    for path, content in _replaced_files.items():
        if content is None:
            path.unlink(missing_ok=True)
        else:
            atomic_write_text(path, content.decode("utf-8"))
    for directory in {path.parent for path, content in _replaced_files.items() if content is None}:
        with contextlib.suppress(OSError):  # only if nothing else is left in it
            directory.rmdir()
    _replaced_files.clear()


class SafeRunFiles(Callback):
    """Hydra callback (conf/hydra/default.yaml): a writable, locked run directory, and secret-free saved configs."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_writable(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_writable(config.hydra.sweep.dir, "hydra.sweep.dir")

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Processes that Lightning starts for DDP ranks run the job again in the same directory; rank 0 wrote it.
        if os.environ.get("LOCAL_RANK", "0") != "0":
            return

        output_dir = Path(config.hydra.runtime.output_dir)
        lock_job_directory(output_dir, "hydra.sweep.dir" if config.hydra.mode == RunMode.MULTIRUN else "hydra.run.dir")
        _replaced_files.clear()
        for name, content in safe_config_files(config).items():
            path = output_dir / HYDRA_SUBDIR / name
            _replaced_files[path] = path.read_bytes() if path.is_file() else None
            write_yaml(path, content)

    def on_job_end(self, config: DictConfig, **kwargs: Any) -> None:
        _replaced_files.clear()
        unlock_job_directory(Path(config.hydra.runtime.output_dir))
