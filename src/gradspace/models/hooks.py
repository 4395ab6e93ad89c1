"""Canonical TransformerLens-style hook names mapped once onto Hugging Face modules.

`hidden_states[-1]` from `output_hidden_states=True` has the final layer norm applied in GPT-NeoX and GPT-2,
so it is not `blocks.{last}.hook_resid_post`; reading activations through forward hooks on the block
modules gives the true residual stream at every layer.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Iterator

import torch

from gradspace.errors import GradspaceError
from gradspace.models.architecture import BLOCK_PATHS

HOOK_PATTERN = re.compile(r"^blocks\.(\d+)\.(hook_resid_pre|hook_resid_post|hook_mlp_out|hook_attn_out)$")


def _get(module: torch.nn.Module, dotted: str) -> torch.nn.Module:
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


def resolve_hook(model: torch.nn.Module, hook_name: str) -> tuple[torch.nn.Module, str]:
    """(module, which) where which is 'input' or 'output' of that module's forward."""
    match = HOOK_PATTERN.match(hook_name)
    if not match:
        raise GradspaceError(
            f"hook '{hook_name}' is not supported; use blocks.<layer>.hook_resid_pre|hook_resid_post|hook_mlp_out|hook_attn_out"
        )
    model_type = model.config.model_type
    if model_type not in BLOCK_PATHS:
        raise GradspaceError(f"no hook mapping for model type '{model_type}'; supported: {', '.join(BLOCK_PATHS)}")
    blocks_path, attn_name, mlp_name = BLOCK_PATHS[model_type]
    blocks = _get(model, blocks_path)
    layer, point = int(match.group(1)), match.group(2)
    if layer >= len(blocks):
        raise GradspaceError(f"hook '{hook_name}': the model has {len(blocks)} layers (0..{len(blocks) - 1}); pick a layer in range")
    block = blocks[layer]
    if point == "hook_resid_pre":
        return block, "input"
    if point == "hook_resid_post":
        return block, "output"
    return getattr(block, mlp_name if point == "hook_mlp_out" else attn_name), "output"


def _first_tensor(value):
    return value[0] if isinstance(value, (tuple, list)) else value


class _ForwardStopped(Exception):
    """Raised by a capturing hook once every activation asked for is in: the rest of the forward is not needed."""


@contextmanager
def capture_activations(model: torch.nn.Module, hook_names: list[str], stop_forward: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """Within the context, each forward pass stores `captured[hook_name] = activation [B, T, d]`. With
    `stop_forward`, the forward ends as soon as every hook has fired (the later blocks and the output layer never
    run; code after the forward call inside the context is skipped)."""
    captured: dict[str, torch.Tensor] = {}
    handles = []

    def store(name: str, value) -> None:
        captured[name] = value
        if stop_forward and len(captured) == len(hook_names):
            raise _ForwardStopped

    for name in hook_names:
        module, which = resolve_hook(model, name)
        if which == "input":
            handles.append(module.register_forward_pre_hook(
                lambda _m, args, kwargs, name=name: store(name, kwargs.get("hidden_states", args[0] if args else None)),
                with_kwargs=True,
            ))
        else:
            handles.append(module.register_forward_hook(lambda _m, _i, out, name=name: store(name, _first_tensor(out))))
    try:
        yield captured
    except _ForwardStopped:
        pass
    finally:
        for handle in handles:
            handle.remove()
