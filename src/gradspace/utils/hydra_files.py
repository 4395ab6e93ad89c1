"""What Hydra writes beside a run, made safe: the run directory is checked before anything starts, and the saved
configs (`.hydra/config.yaml`, `hydra.yaml`, `overrides.yaml`, a sweep's `multirun.yaml`) carry no secrets.

Hydra saves the configs as given, so a `+my_token=...` override would sit in plain text in four files. The shipped
`hydra` config turns Hydra's own saving off (`output_subdir: null`) and `SafeRunFiles` writes the same files with
secret-named keys and their values redacted.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from gradspace.utils.run_config import redact_values, scrub_override, scrub_secrets, secret_values

HYDRA_SUBDIR = ".hydra"


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
    secrets = secret_values(task) | secret_values(hydra_node["overrides"]["task"]) | secret_values(hydra_node["overrides"]["hydra"])
    hydra_node["overrides"] = {kind: [scrub_override(item) for item in items] for kind, items in hydra_node["overrides"].items()}
    return {
        "config.yaml": redact_values(scrub_secrets(task), secrets),
        "hydra.yaml": redact_values({"hydra": scrub_secrets(hydra_node)}, secrets),
        "overrides.yaml": hydra_node["overrides"]["task"],
    }


def write_yaml(path: Path, content: Any) -> None:
    from gradspace.utils.io import atomic_write_text

    atomic_write_text(path, OmegaConf.to_yaml(OmegaConf.create(content)))


class SafeRunFiles(Callback):
    """Hydra callback (conf/hydra/default.yaml): a writable run directory, and secret-free saved configs."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_writable(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_writable(config.hydra.sweep.dir, "hydra.sweep.dir")

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Processes that Lightning starts for DDP ranks run the job again in the same directory; rank 0 wrote it.
        if os.environ.get("LOCAL_RANK", "0") != "0":
            return
        directory = Path(config.hydra.runtime.output_dir) / HYDRA_SUBDIR
        for name, content in safe_config_files(config).items():
            write_yaml(directory / name, content)
