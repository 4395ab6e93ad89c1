"""Weights & Biases without surprises: offline unless the user has credentials, never an interactive prompt."""

from __future__ import annotations

import contextlib
import functools
import netrc
import os
import sys
from pathlib import Path
from typing import Any, Iterator

import hydra
from lightning.pytorch.loggers import WandbLogger

from gradspace.errors import GradspaceError
from gradspace.utils.hydra_runtime import sweep_group
from gradspace.utils.run_config import loggable_config, redact_environment_secrets, scrub_override

MODES = ("auto", "online", "offline", "disabled")


def has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc_path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return netrc.netrc(str(netrc_path)).authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


# What wandb itself accepts in WANDB_MODE, as the mode it means.
ENV_MODES = {"online": "online", "run": "online", "offline": "offline", "dryrun": "offline", "disabled": "disabled"}


def resolve_wandb_mode(requested: str) -> str:
    """The mode a run asks for: an explicit `logger.wandb.mode`; for `auto`, the user's WANDB_MODE if set, else
    online with credentials and offline without."""
    if requested not in MODES:
        raise GradspaceError(f"logger.wandb.mode='{requested}' is unknown; use one of {', '.join(MODES)}")
    if requested == "auto":
        env_mode = os.environ.get("WANDB_MODE", "").strip().lower()
        if env_mode:
            if env_mode not in ENV_MODES:
                raise GradspaceError(f"WANDB_MODE='{env_mode}' is unknown; set it to one of {', '.join(ENV_MODES)} or unset it")
            return ENV_MODES[env_mode]
        return "online" if has_wandb_credentials() else "offline"
    if requested == "online" and not has_wandb_credentials():
        raise GradspaceError("logger.wandb.mode=online but no W&B credentials were found; run `wandb login` or use mode=offline")
    return requested


@functools.lru_cache(maxsize=None)
def online_login_failure() -> str | None:
    """Why the W&B server does not accept this machine's credentials (unreachable, rejected), or None if it does.

    wandb gives up on the check after its HTTP timeout (10 s), where a run started online on an offline machine
    retries for minutes and is then lost. Asked once per process, so a sweep's jobs wait once.
    """
    import wandb  # not at the top: importing wandb takes seconds, and runs without W&B never need it

    try:
        wandb.login(verify=True)
    except wandb.Error as err:
        return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return None


def make_wandb_logger(
    *, project: str, mode: str, save_dir: str | Path, name: str | None, group: str | None,
    tags: list[str] | None, config: dict[str, Any], entity: str | None = None,
):
    """A Lightning `WandbLogger` whose run carries the full resolved (secret-free) config.

    The run is started here, so that a failed online login falls back to offline (with one warning) before any
    work, and with the command line's secret values masked (wandb records the command line with the run).
    """
    resolved_mode = resolve_wandb_mode(mode)
    if resolved_mode == "online" and (failure := online_login_failure()) is not None:
        print(f"warning: W&B login failed ({failure}); this run logs offline, upload it later with "
              f"`wandb sync {Path(save_dir) / 'wandb'}/offline-run-*`", file=sys.stderr)
        resolved_mode = "offline"
    # Stops the login prompt on machines without a TTY. The mode itself goes to wandb.init, not to WANDB_MODE: the
    # user's WANDB_MODE is theirs, and the next job of a sweep must see it, not this run's choice.
    os.environ.setdefault("WANDB_SILENT", "true")
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    # What W&B shows and uploads, besides the config: a name, group or tag may be an interpolated secret too.
    name, group, tags = redact_environment_secrets([name, group, list(tags or [])])
    logger = WandbLogger(
        project=project, entity=entity, name=name, group=group, tags=tags,
        save_dir=str(save_dir), config=redact_environment_secrets(config), mode=resolved_mode,
    )
    # Lightning always passes `anonymous` (None by default) to wandb.init, and wandb then warns on every run that
    # the setting has no effect; the key is dropped, since no gradspace config sets it.
    logger._wandb_init.pop("anonymous", None)
    with argv_without_secrets():
        _ = logger.experiment
    return logger


@contextlib.contextmanager
def argv_without_secrets() -> Iterator[None]:
    saved = list(sys.argv)
    sys.argv[:] = redact_environment_secrets([scrub_override(arg) for arg in saved])
    try:
        yield
    finally:
        sys.argv[:] = saved


def logger_from_config(cfg, *, default_name: str, tags: list[str]):
    """The WandbLogger that `cfg.logger.wandb` asks for (None for `logger=none`), named, grouped and tagged.

    A run without a name gets `default_name`; the jobs of one multirun share the sweep as their group.
    """
    wandb_cfg = (cfg.get("logger") or {}).get("wandb")
    if not wandb_cfg:
        return None
    return make_wandb_logger(
        project=wandb_cfg.project, entity=wandb_cfg.get("entity"), mode=wandb_cfg.mode, save_dir=cfg.paths.output_dir,
        name=wandb_cfg.get("name") or default_name, group=wandb_cfg.get("group") or sweep_group(),
        tags=[*(wandb_cfg.get("tags") or []), *(cfg.get("tags") or []), *tags], config=loggable_config(cfg),
    )


def loggers_from_config(cfg, *, default_name: str, tags: list[str]) -> list:
    """Every tracker `cfg.logger` asks for: W&B from its `wandb` node (see `logger_from_config`), and any other node
    with a `_target_` (a Lightning logger such as CSVLogger or TensorBoardLogger), instantiated as it stands."""
    loggers = [logger_from_config(cfg, default_name=default_name, tags=tags)]
    for key, node in (cfg.get("logger") or {}).items():
        if key != "wandb" and node and "_target_" in node:
            loggers.append(hydra.utils.instantiate(node))
    return [logger for logger in loggers if logger is not None]


def wandb_logger_of(loggers) -> WandbLogger | None:
    """The W&B logger among `loggers`, for what only W&B takes (files, tables, images)."""
    return next((logger for logger in loggers if isinstance(logger, WandbLogger)), None)


def log_wandb_tables(logger: WandbLogger, tables: dict[str, tuple[list[str], list[list]]],
                     images: dict[str, str] | None = None) -> None:
    """Tables (key -> (columns, rows)) and images (key -> PNG path) into the logger's W&B run, as one step."""
    import wandb  # not at the top: importing wandb takes seconds, and runs without W&B never log a table

    payload: dict[str, Any] = {key: wandb.Image(path) for key, path in (images or {}).items()}
    payload.update({key: wandb.Table(columns=list(columns), data=[list(row) for row in rows])
                    for key, (columns, rows) in tables.items()})
    logger.experiment.log(payload)


def finish_wandb() -> None:
    """Close the current run so that every job of a Hydra multirun gets a run of its own."""
    import wandb  # not at the top: importing wandb takes seconds, and runs without W&B never need it

    if wandb.run is not None:
        wandb.finish()
