"""What gradspace knows of each model architecture: where its blocks, attention and MLP live (for hooks), and which
module group a parameter belongs to (for per-module gradient similarity)."""

from __future__ import annotations

import re

# Per architecture: the attribute path of the list of blocks, and of the attention and MLP inside a block.
BLOCK_PATHS = {
    "gpt_neox": ("gpt_neox.layers", "attention", "mlp"),
    "gpt2": ("transformer.h", "attn", "mlp"),
    "llama": ("model.layers", "self_attn", "mlp"),
    "gemma2": ("model.layers", "self_attn", "mlp"),
    "gemma3_text": ("model.layers", "self_attn", "mlp"),
}

MODULE_KINDS = ("embedding", "attention", "mlp", "norm", "unembedding")
LAYER_INDEX = re.compile(r"\.(?:layers|h|layer|blocks)\.(\d+)\.")


def module_group(name: str) -> str:
    """The module group of a parameter: `embedding`, `unembedding`, `final_norm` or `layer<i>.<kind>` with kind
    attention, mlp or norm. Covers GPT-NeoX (Pythia), GPT-2 and Llama-style parameter names."""
    layer = LAYER_INDEX.search(f".{name}")
    lowered = name.lower()
    if layer is None:
        if any(key in lowered for key in ("embed_out", "lm_head")):
            return "unembedding"
        if any(key in lowered for key in ("embed", "wte", "wpe")):
            return "embedding"
        if "norm" in lowered or "ln_f" in lowered:
            return "final_norm"
        return "other"
    # Norms first: their names often mention the sublayer they sit before (`post_attention_layernorm`).
    if "norm" in lowered or ".ln_" in lowered:
        kind = "norm"
    elif any(key in lowered for key in ("attn", "attention")):
        kind = "attention"
    elif any(key in lowered for key in ("mlp", "feed_forward")):
        kind = "mlp"
    else:
        kind = "other"
    return f"layer{layer.group(1)}.{kind}"


def group_kind(group: str) -> str:
    """`layer3.mlp` -> `mlp`; `final_norm` -> `norm`; `embedding` -> `embedding`."""
    if group == "final_norm":
        return "norm"
    return group.split(".", 1)[1] if group.startswith("layer") else group


def group_layer(group: str) -> str | None:
    return group.split(".", 1)[0] if group.startswith("layer") else None


def layer_sort_key(group: str) -> tuple:
    layer = group_layer(group)
    return (0, int(layer[5:])) if layer else (1, group)
