"""Load a causal LM and its tokenizer from a model config: built-in synthetic, Hugging Face hub, a local directory, or a
GGUF file (from an installed package or a path, dequantized once into the cache)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from omegaconf.errors import MissingMandatoryValue
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as transformers_logging

from gradspace.errors import GradspaceError
from gradspace.models.gguf import ensure_gguf_model
from gradspace.models.prefix_token import set_prefix_token
from gradspace.synth.pretrain import PretrainConfig, ensure_synth_model, synth_revision_step, synth_revisions
from gradspace.synth.world import WorldConfig
from gradspace.utils.run_config import plain_section

SOURCES = ("synth", "hf", "local", "gguf")
SINGLE_REVISION_SOURCES = ("local", "gguf")  # one saved model each: their only revision is `main`
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedModel:
    model: Any  # a transformers PreTrainedModel with a causal LM head
    tokenizer: Any
    name: str
    revision: str
    path: str  # what from_pretrained was given: a hub id or a directory


def default_cache_dir() -> Path:
    return Path(os.environ.get("GRADSPACE_CACHE", Path.home() / ".cache" / "gradspace"))


def _require(model_cfg: Mapping, key: str):
    try:
        value = model_cfg.get(key)
    except MissingMandatoryValue:  # a DictConfig's `???`
        value = None
    if value in (None, "", "???"):
        raise GradspaceError(f"model config '{model_cfg.get('name', '?')}' has no {key}; set model.{key}=...")
    return value


def check_model_config(model_cfg: Mapping) -> None:
    """What can be checked about a model config without loading anything: entry points call it before they read
    data, so a missing model.path is reported as that and not as whatever reading the data failed on."""
    source = model_cfg.get("source", "hf")
    if source not in SOURCES:
        raise GradspaceError(f"model.source='{source}' is unknown; use one of {', '.join(SOURCES)}")
    if source in ("local", "hf") or (source == "gguf" and not model_cfg.get("package")):
        _require(model_cfg, "path")
    revision = str(model_cfg.get("revision") or "main")
    if source in SINGLE_REVISION_SOURCES and revision != "main":
        raise GradspaceError(
            f"model '{model_cfg.get('name')}' ({source}) has one revision, main, not '{revision}'; drop model.revision"
        )
    if str(model_cfg.get("dtype", "float32")) not in DTYPES:
        raise GradspaceError(f"model.dtype='{model_cfg.get('dtype')}' is unknown; use one of {', '.join(DTYPES)}")


def resolve_pretrained_path(model_cfg: Mapping, cache_dir: Path | None = None, progress: bool = True) -> tuple[str, str | None]:
    """What `from_pretrained` gets: (path or hub id, hub revision or None for a directory).

    Synthetic models are pretrained once into the cache; their checkpoints are directories named like
    Pythia's revisions (`step100`, ..., `main`), so `model.revision` means the same thing for both.
    """
    check_model_config(model_cfg)
    source = model_cfg.get("source", "hf")
    revision = str(model_cfg.get("revision") or "main")
    if source == "synth":
        root = ensure_synth_model(
            _require(model_cfg, "name"),
            WorldConfig(**plain_section(model_cfg.get("world"))),
            PretrainConfig(**plain_section(model_cfg.get("pretrain"))),
            cache_dir or default_cache_dir(),
            progress=progress,
        )
        available = synth_revisions(root)
        if revision not in available:
            raise GradspaceError(
                f"model '{model_cfg['name']}' has no revision '{revision}'; choose one of: {', '.join(available)}"
            )
        return str(root / revision), None
    if source == "local":
        path = Path(_require(model_cfg, "path")).expanduser()
        if not (path / "config.json").is_file():
            raise GradspaceError(f"{path} is not a saved model directory (no config.json); set model.path to a save_pretrained directory")
        return str(path), None
    if source == "gguf":
        return str(ensure_gguf_model(model_cfg, cache_dir or default_cache_dir(), progress=progress)), None
    return str(_require(model_cfg, "path")), revision


def revision_step(model_cfg: Mapping, path: str) -> int | None:
    """Training step of a checkpoint: from a `step<N>` revision, or for a synthetic `main` from the model's own list."""
    match = re.fullmatch(r"step(\d+)", str(model_cfg.get("revision")))
    if match:
        return int(match.group(1))
    return synth_revision_step(Path(path).parent, str(model_cfg.get("revision")))


def load_model(model_cfg: Mapping, cache_dir: Path | None = None, device: str | torch.device = "cpu", progress: bool = True) -> LoadedModel:
    path, revision = resolve_pretrained_path(model_cfg, cache_dir, progress=progress)
    if not progress:
        transformers_logging.disable_progress_bar()
    dtype_name = str(model_cfg.get("dtype", "float32"))
    trust_remote_code = bool(model_cfg.get("trust_remote_code", False))
    hub_kwargs = {"revision": revision} if revision is not None else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, **hub_kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=DTYPES[dtype_name], trust_remote_code=trust_remote_code, use_safetensors=None, **hub_kwargs
        )
    except SafetensorError as err:  # a truncated or empty weights file: an interrupted copy, save or download
        raise GradspaceError(
            f"could not load model {path}: its safetensors weights are damaged or incomplete ({err}); save or download the model again"
        ) from None
    except (OSError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if revision is None:  # a directory on disk: going online would not help
            raise GradspaceError(
                f"could not load the model directory {path} ({first_line}); it needs config.json, the weights "
                f"(model.safetensors or pytorch_model.bin) and the tokenizer files as save_pretrained writes them"
            ) from None
        raise GradspaceError(
            f"could not load model '{path}' at revision '{revision}' ({first_line}); connect to the internet once "
            f"(or unset HF_HUB_OFFLINE) so it is cached, or point model=local model.path=<dir> at a saved copy"
        ) from None
    set_prefix_token(tokenizer, model_cfg.get("prefix_token"))
    if tokenizer.pad_token_id is None:
        # Padding is masked out everywhere it is used; EOS is a safe filler that needs no new embedding row.
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device)
    return LoadedModel(model=model, tokenizer=tokenizer, name=str(model_cfg.get("name", path)), revision=revision or str(model_cfg.get("revision") or "main"), path=path)
