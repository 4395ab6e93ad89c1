"""The resolved run config as plain data, with anything secret-looking removed before it is logged or saved."""

from __future__ import annotations

import re
from typing import Any

from omegaconf import DictConfig, OmegaConf

# Whole name parts only, so `tokenizer` or `max_tokens` stay while `HF_TOKEN` and `api_key` go.
SECRET_KEY = re.compile(r"(^|[_\-.])(api[_\-]?key|key|token|secret|password|passwd|credentials?|auth)($|[_\-.])", re.IGNORECASE)
REDACTED = "<redacted>"


def scrub_secrets(value: Any) -> Any:
    """Replace the value of every key that names a secret; config values that look like keys are not guessed at."""
    if isinstance(value, dict):
        return {key: REDACTED if SECRET_KEY.search(str(key)) else scrub_secrets(item) for key, item in value.items()}
    if isinstance(value, list):
        return [scrub_secrets(item) for item in value]
    return value


def loggable_config(cfg: DictConfig | dict) -> dict:
    """Fully resolved, secret-free copy of the config for W&B and results files."""
    plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False) if isinstance(cfg, DictConfig) else cfg
    return scrub_secrets(plain)


def plain_section(section) -> dict:
    """A config section (DictConfig, mapping or None) as a plain dict with lists, ready for a dataclass."""
    if isinstance(section, DictConfig):
        return OmegaConf.to_container(section, resolve=True)
    return dict(section or {})
