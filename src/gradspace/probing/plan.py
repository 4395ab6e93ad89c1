"""Which checkpoints a probe measures (model × revision) and where their transfer rows come from."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping

from hydra.errors import MissingConfigException

from gradspace.errors import GradspaceError
from gradspace.ftgd.results import TrainResults
from gradspace.models.loading import SINGLE_REVISION_SOURCES, check_model_config
from gradspace.probing.config import ProbeConfig, SourceConfig
from gradspace.probing.transfer import SweepRecords, group_by_checkpoint, read_multirun_dir, read_wandb_group
from gradspace.utils.hydra_compose import command_line_sets, compose_config, group_options
from gradspace.utils.run_config import plain_section

log = logging.getLogger(__name__)


@dataclass
class Checkpoint:
    model_cfg: dict  # resolved model config, revision included
    records: list[TrainResults] | None = None  # transfer rows read from a sweep or W&B; None: fine-tune here or skip

    @property
    def name(self) -> str:
        """`model@revision`."""
        return f"{self.model_cfg['name']}@{self.model_cfg['revision']}"


def requested_revisions(probe: ProbeConfig, model_revision: str) -> list[str]:
    """`revisions` (a list), unless the command line sets `model.revision`: then that one revision."""
    if probe.revisions is None or command_line_sets("model.revision"):
        return [str(model_revision)]
    if not probe.revisions:
        raise GradspaceError("revisions=[] names no checkpoint; list some (revisions=[step200,main]) or set revisions=null")
    return list(probe.revisions)


def model_configs(main_model: Mapping, more: list[str]) -> list[dict]:
    """The main model config and those of `models` (config names under conf/model), for size comparisons."""
    configs = [dict(main_model)]
    check_model_config(configs[0])
    for name in more:
        try:
            configs.append(plain_section(compose_config("probe", [f"model={name}"]).model))
        except MissingConfigException:
            raise GradspaceError(f"models: no model config '{name}'; choose from {', '.join(group_options('model'))}") from None
        check_model_config(configs[-1])
    return configs


def transfer_records(source: SourceConfig, wandb_cfg: Mapping) -> tuple[SweepRecords | None, str]:
    """The transfer rows read from a sweep directory or W&B group, and the name of the source."""
    if source.multirun_dir:
        return read_multirun_dir(source.multirun_dir), f"multirun_dir:{source.multirun_dir}"
    if source.wandb_group:
        read = read_wandb_group(str(source.wandb_group), project=str(wandb_cfg.get("project") or "gradspace"),
                                entity=wandb_cfg.get("entity"), mode=str(wandb_cfg.get("mode") or "auto"))
        return read, f"wandb_group:{source.wandb_group}"
    return None, "inprocess" if source.inprocess else "none"


def revisions_of(model_cfg: dict, requested: list[str]) -> list[str]:
    """The requested revisions a model has: a local directory or a GGUF file is one model, `main`."""
    if model_cfg.get("source") in SINGLE_REVISION_SOURCES:
        if requested != ["main"]:
            log.info("%s is a single saved model (source %s): probing its one revision, main, not %s",
                     model_cfg.get("name"), model_cfg.get("source"), ", ".join(requested))
        return ["main"]
    return requested


def plan_checkpoints(probe: ProbeConfig, main_model: Mapping, read: SweepRecords | None) -> list[Checkpoint]:
    if read is None:
        requested = requested_revisions(probe, main_model["revision"])
        return [Checkpoint({**model_cfg, "revision": revision}) for model_cfg in model_configs(main_model, probe.models)
                for revision in revisions_of(model_cfg, requested)]
    objective = probe.transfer.objective
    grouped = group_by_checkpoint(read.records)
    objectives = {key[2] for key in grouped}
    if len(objectives) > 1:
        grouped = {key: records for key, records in grouped.items() if key[2] == objective}
        if not grouped:
            raise GradspaceError(f"the sweep has objectives {', '.join(sorted(objectives))} but not "
                                 f"transfer.objective={objective}; set it to one of them")
    checkpoints = []
    for records in grouped.values():
        model_cfg = records[0].config.get("model")
        if not model_cfg:
            raise GradspaceError(f"{records[0].source}: its results.json has no config.model; rerun it with the current train.py")
        checkpoints.append(Checkpoint(dict(model_cfg), records))
    return checkpoints
