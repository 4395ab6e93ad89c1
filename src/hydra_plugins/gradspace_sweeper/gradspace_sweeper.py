"""Hydra's basic sweeper, except that a job whose config cannot be composed (`-m task=sva,no_such_task`) does not
stop the sweep: its failure is recorded in its job directory (`failure.json`, as for a job that fails while
running), the other jobs run with their usual numbers, and the sweep then exits with code 2 naming it.

Hydra's own sweeper composes every job's config before launching any and aborts the whole sweep on the first
that fails. The sweep's `multirun.yaml` is saved without secrets. Selected in conf/hydra/default.yaml.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any, List, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn
from omegaconf import OmegaConf, open_dict, read_write


class GradspaceSweeper(BasicSweeper):
    def sweep(self, arguments: List[str]) -> Any:
        # Not at the top: Hydra imports every plugin module in every app it starts; gradspace loads when a sweep runs.
        from gradspace.errors import FAILURE_FILE
        from gradspace.utils.hydra_files import safe_config_files, write_yaml
        from gradspace.utils.io import atomic_write_json

        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        params_conf = self._parse_config()
        params_conf.extend(arguments)
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        self.overrides = self.split_arguments(parser.parse_overrides(params_conf), self.max_batch_size)

        sweep_dir = Path(self.config.hydra.sweep.dir)
        refuse_used_sweep_dir(sweep_dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        # What multirun.yaml holds: the sweep's full config, with secrets removed as in each job's hydra.yaml.
        files = safe_config_files(self.config)
        write_yaml(sweep_dir / "multirun.yaml", {**files["config.yaml"], **files["hydra.yaml"]})

        returns: List[Sequence[JobReturn]] = []
        not_composed: list[str] = []
        initial_job_idx = 0
        while not self.is_done():
            batch = self.get_job_batch()
            runnable: list[tuple[int, Sequence[str]]] = []
            for job_idx, overrides in enumerate(batch, start=initial_job_idx):
                try:
                    self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
                except Exception as err:  # what Hydra's own check raises for a job it cannot compose
                    # One line, without Hydra's listing of its config search path.
                    text = str(err).split("Config search path")[0]
                    message = " ".join(line.strip() for line in text.splitlines() if line.strip())
                    atomic_write_json(self._job_dir(job_idx) / FAILURE_FILE, {"status": "failed", "error": f"{type(err).__name__}: {message}"})
                    not_composed.append(f"job {job_idx}: {message}")
                    continue
                runnable.append((job_idx, overrides))
            results: list[JobReturn] = []
            for first, jobs in _consecutive(runnable):  # launched in runs of consecutive numbers, so numbers stay
                results.extend(self.launcher.launch(jobs, initial_job_idx=first))
            for result in results:
                _ = result.return_value  # raises the job's exception if it failed, as Hydra's sweeper does
            initial_job_idx += len(batch)
            returns.append(results)
        if not_composed:
            print(f"error: {len(not_composed)} sweep job(s) could not start (the others ran; failure.json in the job "
                  f"directory says why): " + "; ".join(not_composed), file=sys.stderr)
            sys.exit(2)
        return returns

    def _job_dir(self, job_idx: int) -> Path:
        """The directory Hydra would have given the job (`hydra.sweep.subdir`, by default its number)."""
        config = copy.deepcopy(self.config)
        with read_write(config), open_dict(config):
            config.hydra.job.num = job_idx
        subdir = OmegaConf.select(config, "hydra.sweep.subdir", throw_on_resolution_failure=False)
        return Path(self.config.hydra.sweep.dir) / str(subdir if subdir is not None else job_idx)


def refuse_used_sweep_dir(sweep_dir: Path) -> None:
    """Exit with one line (code 2) if an earlier sweep ran in `sweep_dir`: a second one overwrote its multirun.yaml
    and jobs' saved configs and wrote failure.json beside their finished results.json, while saying nothing was
    changed."""
    used = sorted(child.name for child in sweep_dir.iterdir()
                  if child.name == "multirun.yaml" or (child.is_dir() and child.name.isdigit())) if sweep_dir.is_dir() else []
    if used:
        print(f"error: hydra.sweep.dir={sweep_dir} already holds an earlier sweep ({', '.join(used)}); nothing was "
              f"changed: sweep into a new directory (leave hydra.sweep.dir at its default) or delete that one",
              file=sys.stderr)
        sys.exit(2)


def _consecutive(jobs: list[tuple[int, Sequence[str]]]) -> list[tuple[int, list[Sequence[str]]]]:
    """[(first job number, overrides of the jobs numbered from it on)] for each run of consecutive numbers."""
    runs: list[tuple[int, list[Sequence[str]]]] = []
    for job_idx, overrides in jobs:
        if runs and runs[-1][0] + len(runs[-1][1]) == job_idx:
            runs[-1][1].append(overrides)
        else:
            runs.append((job_idx, [overrides]))
    return runs
