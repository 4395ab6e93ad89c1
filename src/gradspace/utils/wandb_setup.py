"""Weights & Biases without surprises: offline unless the user has credentials, never an interactive prompt."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

from gradspace.errors import GradspaceError

MODES = ("auto", "online", "offline", "disabled")


def has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc_path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return netrc.netrc(str(netrc_path)).authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_wandb_mode(requested: str) -> str:
    if requested not in MODES:
        raise GradspaceError(f"logger.wandb.mode='{requested}' is unknown; use one of {', '.join(MODES)}")
    if requested == "auto":
        return "online" if has_wandb_credentials() else "offline"
    if requested == "online" and not has_wandb_credentials():
        raise GradspaceError("logger.wandb.mode=online but no W&B credentials were found; run `wandb login` or use mode=offline")
    return requested


def make_wandb_logger(
    *, project: str, mode: str, save_dir: str | Path, name: str | None, group: str | None,
    tags: list[str] | None, config: dict[str, Any], entity: str | None = None,
):
    """A Lightning `WandbLogger` whose run carries the full resolved (secret-free) config."""
    from lightning.pytorch.loggers import WandbLogger

    resolved_mode = resolve_wandb_mode(mode)
    # The environment variables are read by wandb itself; they stop the login prompt on machines without a TTY.
    os.environ["WANDB_MODE"] = resolved_mode
    os.environ.setdefault("WANDB_SILENT", "true")
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    logger = WandbLogger(
        project=project, entity=entity, name=name, group=group, tags=list(tags or []),
        save_dir=str(save_dir), offline=resolved_mode == "offline", config=config,
        **({"mode": "disabled"} if resolved_mode == "disabled" else {}),
    )
    return logger


def logger_from_config(cfg, *, default_name: str, tags: list[str]):
    """The WandbLogger that `cfg.logger.wandb` asks for (None for `logger=none`), named, grouped and tagged.

    A run without a name gets `default_name`; the jobs of one multirun share the sweep as their group.
    """
    from gradspace.utils.hydra_runtime import sweep_group
    from gradspace.utils.run_config import loggable_config

    wandb_cfg = (cfg.get("logger") or {}).get("wandb")
    if not wandb_cfg:
        return None
    return make_wandb_logger(
        project=wandb_cfg.project, entity=wandb_cfg.get("entity"), mode=wandb_cfg.mode, save_dir=cfg.paths.output_dir,
        name=wandb_cfg.get("name") or default_name, group=wandb_cfg.get("group") or sweep_group(),
        tags=[*(wandb_cfg.get("tags") or []), *(cfg.get("tags") or []), *tags], config=loggable_config(cfg),
    )


def finish_wandb() -> None:
    """Close the current run so that every job of a Hydra multirun gets a run of its own."""
    import wandb

    if wandb.run is not None:
        wandb.finish()
