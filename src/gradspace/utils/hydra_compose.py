"""Composing this repository's primary configs (train, probe) from inside a Hydra app or from a library call."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from gradspace.errors import GradspaceError

# Only for library calls outside a Hydra app (probe.py composes on the app's own search path): the configs shipped
# with the package (src/gradspace/conf links to the repository's conf/; a wheel holds a copy).
PACKAGE_CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


@contextlib.contextmanager
def hydra_search_path():
    """Inside a Hydra app (probe.py), the app's own config search path; else (a library call) the package's conf/."""
    if GlobalHydra.instance().is_initialized():
        yield GlobalHydra.instance()
        return
    if not PACKAGE_CONF_DIR.is_dir():
        raise GradspaceError(f"no Hydra app is running and {PACKAGE_CONF_DIR} does not exist; reinstall gradspace, or call "
                             f"run() from probe.py (or inside hydra.initialize_config_dir(<the repository's conf/>))")
    with initialize_config_dir(config_dir=str(PACKAGE_CONF_DIR), version_base="1.3"):
        yield GlobalHydra.instance()


def compose_config(config_name: str, overrides: list[str]) -> DictConfig:
    """Compose a primary config of this repository (train, probe) on the current search path."""
    with hydra_search_path():
        return compose(config_name=config_name, overrides=overrides)


def group_options(group: str) -> list[str]:
    """The options of a config group (e.g. the model configs), sorted."""
    with hydra_search_path() as hydra:
        return sorted(hydra.config_loader().get_group_options(group))


def command_line_sets(key: str) -> bool:
    """Whether the Hydra command line overrides `key` (e.g. a `-m model.revision=...` sweep)."""
    if not HydraConfig.initialized():
        return False
    return any(re.fullmatch(rf"[+~]*{re.escape(key)}=.*", item) for item in HydraConfig.get().overrides.task)
