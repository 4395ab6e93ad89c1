"""How a model takes its key/value cache: the argument's name changed across transformers versions."""

from __future__ import annotations

import inspect


def cache_argument_name(model) -> str | None:
    """The forward argument (and output attribute) of `model`'s key/value cache: `cache` in transformers 5.2x,
    `past_key_values` before (5.2x still takes it, with a deprecation warning, until 5.40); None without one."""
    parameters = inspect.signature(model.forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in parameters), None)
