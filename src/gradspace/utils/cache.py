"""Directories built once into the cache: atomically, under a file lock, and verified before every use.

A cached directory holds a `COMPLETE` manifest written last, with the size of every file the build wrote. A
directory without it is unfinished; one whose files do not match it (a truncated copy, a deleted weight file) is
rebuilt instead of failing later with a traceback from deep inside a loader.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from filelock import FileLock

from gradspace.utils.io import atomic_write_json

COMPLETE_MARKER = "COMPLETE"


def fingerprint(*parts: Any) -> str:
    """A key for what `parts` determine (settings, names, texts): equal parts, equal key."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def file_sizes(root: Path) -> dict[str, int]:
    """Every regular file below `root` (the manifest excepted) with its size, keyed by its relative path."""
    return {
        str(path.relative_to(root)): path.stat().st_size
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name != COMPLETE_MARKER
    }


def is_complete(root: Path) -> bool:
    """Whether `root` was finished by `build_once` and every file it wrote is still there at its written size."""
    marker = Path(root) / COMPLETE_MARKER
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    for relative, size in recorded.items():
        path = Path(root) / relative
        if not path.is_file() or path.stat().st_size != size:
            return False
    return True


def build_once(root: Path, build: Callable[[Path], None]) -> Path:
    """`root`, built by `build(partial_dir)` unless a complete, intact copy is already there.

    The build writes into a hidden partial directory beside `root` that is renamed into place when done, under a
    lock, so concurrent callers (DDP ranks, sweep jobs) build once and an interrupted build never leaves a half
    cache behind.
    """
    root = Path(root)
    if is_complete(root):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root.parent / f".{root.name}.lock")):
        if is_complete(root):  # another process finished it while we waited for the lock
            return root
        # Holding the lock, any partial directory of this root is left over from a killed build.
        for stale in root.parent.glob(f".{root.name}.*.partial"):
            shutil.rmtree(stale, ignore_errors=True)
        partial = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.", suffix=".partial"))
        try:
            build(partial)
            atomic_write_json(partial / COMPLETE_MARKER, {"files": file_sizes(partial)})
            if root.exists():  # incomplete or damaged: replace it
                shutil.rmtree(root)
            os.replace(partial, root)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    return root
