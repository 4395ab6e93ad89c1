"""Directories built once into the cache: atomically, under a file lock, and verified before every use.

A cached directory holds a `COMPLETE` manifest written last, with the size and SHA-256 of every file the build
wrote. A directory without it is unfinished; one whose files do not match it (a truncated copy, a deleted weight
file, bytes changed at the same size) is rebuilt instead of being used silently or failing later with a traceback
from deep inside a loader. Each file is hashed once per process (again only if its size or mtime changes).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from filelock import FileLock

from gradspace.errors import GradspaceError
from gradspace.utils.io import atomic_write_json

COMPLETE_MARKER = "COMPLETE"


def fingerprint(*parts: Any) -> str:
    """A key for what `parts` determine (settings, names, texts): equal parts, equal key."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


# Hashes of files this process read, by (device, inode, size, mtime_ns): verifying a cache before every use (a
# probe loads its model once per job) would otherwise read the weights again each time. Keyed by inode, not path,
# so that the rename of a finished build into place keeps the hashes its manifest was written from.
_hashes: dict[tuple[int, int, int, int], str] = {}


def file_sha256(path: Path) -> str:
    stat = path.stat()
    key = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key not in _hashes:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _hashes[key] = digest.hexdigest()
    return _hashes[key]


def file_manifest(root: Path) -> dict[str, dict[str, Any]]:
    """Every regular file below `root` (the manifest excepted), keyed by its relative path: its size and SHA-256."""
    return {
        str(path.relative_to(root)): {"size": path.stat().st_size, "sha256": file_sha256(path)}
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name != COMPLETE_MARKER
    }


def _recorded_files(root: Path) -> dict[str, Any] | None:
    try:
        recorded = json.loads((Path(root) / COMPLETE_MARKER).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return recorded if isinstance(recorded, dict) else None


def _matches(path: Path, entry: Any) -> bool:
    if not path.is_file():
        return False
    if isinstance(entry, int):  # a manifest of sizes only, written before hashes were recorded
        return path.stat().st_size == entry
    return (isinstance(entry, dict) and path.stat().st_size == entry.get("size")
            and file_sha256(path) == entry.get("sha256"))


def changed_file(root: Path) -> str | None:
    """The first file of `root` that differs from its manifest (missing, cut, or other bytes), else None."""
    recorded = _recorded_files(root) or {}
    return next((relative for relative, entry in recorded.items() if not _matches(Path(root) / relative, entry)), None)


def is_complete(root: Path) -> bool:
    """Whether `root` was finished by `build_once` and every file it wrote is still there with its written content."""
    return _recorded_files(root) is not None and changed_file(root) is None


def _sizes_only(root: Path) -> bool:
    """Whether the manifest of `root` was written before hashes were recorded."""
    recorded = _recorded_files(root)
    return bool(recorded) and any(isinstance(entry, int) for entry in recorded.values())


def _add_hashes(root: Path) -> None:
    """A cache whose manifest has sizes only and whose files have those sizes: its hashes are recorded now, so that
    later changes are caught, rather than rebuilding (minutes of pretraining or conversion) what there is no record
    to check against."""
    recorded = _recorded_files(root)
    if _sizes_only(root):
        atomic_write_json(Path(root) / COMPLETE_MARKER,
                          {"files": {relative: {"size": (Path(root) / relative).stat().st_size,
                                                "sha256": file_sha256(Path(root) / relative)} for relative in recorded}})


def build_once(root: Path, build: Callable[[Path], None]) -> Path:
    """`root`, built by `build(partial_dir)` unless a complete, intact copy is already there.

    The build writes into a hidden partial directory beside `root` that is renamed into place when done, under a
    lock, so concurrent callers (DDP ranks, sweep jobs) build once and an interrupted build never leaves a half
    cache behind.
    """
    root = Path(root)
    if is_complete(root) and not _sizes_only(root):
        return root
    lock = FileLock(str(root.parent / f".{root.name}.lock"))
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except OSError as err:  # a cache dir that is a file, lies under one, or is read-only: a traceback from mkdir
        file = next((part for part in (root.parent, *root.parent.parents) if part.exists() and not part.is_dir()), None)
        raise GradspaceError(f"cannot build {root.name} in the cache {root.parent} "
                             f"({f'{file} is a file' if file else err.strerror or err}); set paths.cache_dir=<dir> "
                             f"(or GRADSPACE_CACHE) to a writable directory") from None
    try:
        if is_complete(root):  # another process finished it while we waited for the lock
            _add_hashes(root)
            return root
        changed = changed_file(root)
        if changed is not None:
            print(f"warning: {root / changed} differs from what was built there (cut short or changed since); "
                  f"building {root.name} again", file=sys.stderr)
        # Holding the lock, any partial directory of this root is left over from a killed build.
        for stale in root.parent.glob(f".{root.name}.*.partial"):
            shutil.rmtree(stale, ignore_errors=True)
        partial = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}.", suffix=".partial"))
        try:
            build(partial)
            atomic_write_json(partial / COMPLETE_MARKER, {"files": file_manifest(partial)})
            if root.exists():  # incomplete or damaged: replace it
                shutil.rmtree(root)
            os.replace(partial, root)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    finally:
        lock.release()
    return root
