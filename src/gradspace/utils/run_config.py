"""The resolved run config as plain data, with anything secret-looking removed before it is logged or saved."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import MISSING, fields
from typing import Any

from omegaconf import DictConfig, OmegaConf

from gradspace.errors import GradspaceError

# Whole name parts only, so `tokenizer` or `max_tokens` stay while `HF_TOKEN` and `api_key` go.
SECRET_KEY = re.compile(r"(^|[_\-.])(api[_\-]?key|key|token|secret|password|passwd|credentials?|auth)($|[_\-.])", re.IGNORECASE)
# Settings that name a tokenizer's token (model.prefix_token: "<|endoftext|>"), not a credential.
TOKEN_SETTINGS = re.compile(r"(^|[_\-.])(prefix|bos|eos|pad|unk|sep|cls|mask)_token$", re.IGNORECASE)
REDACTED = "<redacted>"
MIN_SECRET_LENGTH = 4
# Environment values shorter than this are settings (`TOKENIZERS_...=false`, `KEY_TYPE=rsa`), not credentials, which
# are far longer; redacting them would blank ordinary words of a config.
MIN_ENVIRONMENT_SECRET_LENGTH = 8


def is_secret_key(key: str) -> bool:
    return bool(SECRET_KEY.search(key)) and not TOKEN_SETTINGS.search(key)


def scrub_secrets(value: Any) -> Any:
    """Replace the value of every key that names a secret; config values that look like keys are not guessed at."""
    if isinstance(value, dict):
        return {key: REDACTED if is_secret_key(str(key)) else scrub_secrets(item) for key, item in value.items()}
    if isinstance(value, list):
        return [scrub_secrets(item) for item in value]
    return value


def scrub_override(override: str) -> str:
    """A command-line override (`+my_token=abc`, `logger.wandb.api_key=abc`) with a secret key's value redacted."""
    key, equals, _ = override.partition("=")
    return f"{key}={REDACTED}" if equals and is_secret_key(key.lstrip("+~").rsplit(".", 1)[-1]) else override


def secret_values(value: Any) -> set[str]:
    """Every value of a secret-named key in a config (or list of overrides), as text, to be removed wherever it occurs."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if is_secret_key(str(key)) and isinstance(item, (str, int, float)):
                found.add(str(item))
            else:
                found |= secret_values(item)
    elif isinstance(value, list):
        for item in value:
            found |= secret_values(item)
    elif isinstance(value, str) and scrub_override(value) != value:
        found.add(value.partition("=")[2])
    # Shorter values would redact ordinary text (`+my_token=1` is no secret worth hiding every "1" for).
    return {secret for secret in found if len(secret) >= MIN_SECRET_LENGTH}


def environment_secrets() -> set[str]:
    """The values of secret-named environment variables (WANDB_API_KEY, HF_TOKEN, ...): an `${oc.env:...}`
    interpolation, or a value pasted on the command line, puts them into a config under any key."""
    return {value for name, value in os.environ.items()
            if SECRET_KEY.search(name) and len(value.strip()) >= MIN_ENVIRONMENT_SECRET_LENGTH}


def redact_environment_secrets(value: Any) -> Any:
    """`value` (text, or a structure of it) with every secret of the environment redacted wherever it occurs."""
    return redact_values(value, environment_secrets())


class SecretLogFilter(logging.Filter):
    """Redacts secret overrides and the environment's secrets from log lines (a sweep logs every job's overrides
    as it launches it); set on Hydra's logging handlers in conf/hydra/default.yaml."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        words = message.split(" ")
        redacted = redact_environment_secrets(" ".join(scrub_override(word) for word in words))
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def redact_values(value: Any, secrets: set[str]) -> Any:
    """`value` with each occurrence of a secret inside any string (override lists, directory names) redacted."""
    if isinstance(value, dict):
        return {key: redact_values(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [redact_values(item, secrets) for item in value]
    if isinstance(value, str):
        for secret in sorted(secrets, key=len, reverse=True):
            value = value.replace(secret, REDACTED)
    return value


def loggable_config(cfg: DictConfig | dict) -> dict:
    """Fully resolved, secret-free copy of the config for W&B and results files: secret-named keys redacted, and the
    environment's secrets wherever they occur (`+x=${oc.env:HF_TOKEN}`, `tags=[${oc.env:HF_TOKEN}]`)."""
    plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False) if isinstance(cfg, DictConfig) else cfg
    return redact_environment_secrets(scrub_secrets(plain))


def missing_values(value: Any, prefix: str = "") -> list[str]:
    """Dotted names of the values left as Hydra's `???` (must be given), without resolving anything else."""
    if isinstance(value, DictConfig):
        value = OmegaConf.to_container(value, resolve=False)
    if isinstance(value, dict):
        return [name for key, item in value.items() for name in missing_values(item, f"{prefix}{key}.")]
    if isinstance(value, list):
        return [name for index, item in enumerate(value) for name in missing_values(item, f"{prefix}{index}.")]
    return [prefix.rstrip(".")] if value == "???" else []


def plain_section(section) -> dict:
    """A config section (DictConfig, mapping or None) as a plain dict with lists, ready for a dataclass."""
    if isinstance(section, DictConfig):
        return OmegaConf.to_container(section, resolve=True)
    return dict(section or {})


def config_from_section(config_class, section, name: str):
    """`config_class` built from a config section, refusing keys it does not know (a misspelt key would otherwise be
    silently ignored) and keys it needs but the section lacks; `name` is the section's path for the message."""
    values = plain_section(section)
    known = [field.name for field in fields(config_class)]
    unknown = [key for key in values if key not in known]
    if unknown:
        raise GradspaceError(f"{name}.{unknown[0]} is not a setting of {name}; the known ones are {', '.join(known)}")
    required = [f.name for f in fields(config_class) if f.default is MISSING and f.default_factory is MISSING]
    missing = [key for key in required if key not in values]
    if missing:
        raise GradspaceError(f"{name} lacks {', '.join(missing)}; add it to the config (the shipped YAML has every key)")
    return config_class(**values)
