"""Finished pieces of a probe, kept under its run directory so that a killed probe, rerun there, picks up where it
stopped (`python probe.py ... hydra.run.dir=<the killed run's directory>`).

Each piece (one task's gradient measurements, a checkpoint's evaluation) is written atomically, with a fingerprint
of everything that determines it (model, settings, the pairs themselves); a piece whose fingerprint differs, e.g.
after a change of budget, is measured again rather than reused. Transfer rows need no store: each fine-tuning job
writes its own results.json, which is reused when its config is the one the probe would run now.
"""

from __future__ import annotations

import hashlib
import json
import os
import string
import tempfile
from pathlib import Path

import numpy as np

from gradspace.utils.io import atomic_write_json

# Characters a task or checkpoint name keeps in a path (BLiMP UIDs, `model@revision`); any other is %-escaped.
PATH_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-_.@+=,")
MAX_NAME_BYTES = 200  # below the 255 of common file systems, leaving room for suffixes such as `.npz`


def safe_name(name: str) -> str:
    """A task or checkpoint name as one path component, distinct for distinct names: UIDs `.` and `..` would name
    the parent folder and `a/b` would collide with `a_b`, so the dots of those two and every character outside
    PATH_CHARACTERS (`%` included) are %-escaped; a name too long for a file system is cut and given its hash."""
    escaped = "".join(char if char in PATH_CHARACTERS else "".join(f"%{byte:02X}" for byte in char.encode()) for char in name)
    if escaped in ("", ".", ".."):
        escaped = "%2E" * len(escaped) or "%"  # a lone % is no escape, so no other name gives it
    if len(escaped) > MAX_NAME_BYTES:
        escaped = f"{escaped[:MAX_NAME_BYTES - 17]}-{hashlib.sha256(name.encode()).hexdigest()[:16]}"
    return escaped


class ResumeStore:
    """Per-task results under `root`; with `enabled=False` nothing is read (everything is measured afresh) but
    everything is still written, so the run itself can be resumed."""

    def __init__(self, root: Path, enabled: bool) -> None:
        self.root = Path(root)
        self.enabled = enabled

    def load_json(self, relative: str, key: str) -> dict | None:
        path = self.root / relative
        if not self.enabled or not path.is_file():
            return None
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None
        return saved.get("data") if saved.get("fingerprint") == key else None

    def save_json(self, relative: str, key: str, data: dict) -> None:
        atomic_write_json(self.root / relative, {"fingerprint": key, "data": data})

    def load_task_state(self, relative: str, key: str) -> dict | None:
        """A `GradientSpace.task_state` saved by `save_task_state` under the same fingerprint, else None."""
        path = self.root / relative
        if not self.enabled or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as saved:
                arrays = {name: saved[name] for name in saved.files}
        except (OSError, ValueError, KeyError):
            return None
        meta = json.loads(str(arrays.pop("meta")))
        if meta.get("fingerprint") != key:
            return None
        groups = meta["groups"]
        return {"task": meta["task"], "groups": groups, "total": meta["total"], "top_fraction": meta["top_fraction"],
                "sketch": arrays["sketch"], "sq_norms": arrays["sq_norms"], "top_overall": arrays["top_overall"],
                "top_groups": {group: arrays[f"top_group_{index}"] for index, group in enumerate(groups)}}

    def save_task_state(self, relative: str, key: str, state: dict) -> None:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"fingerprint": key, **{name: state[name] for name in ("task", "groups", "total", "top_fraction")}}
        arrays = {"sketch": state["sketch"], "sq_norms": state["sq_norms"], "top_overall": state["top_overall"],
                  **{f"top_group_{index}": state["top_groups"][group] for index, group in enumerate(state["groups"])}}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, meta=np.array(json.dumps(meta)), **arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
