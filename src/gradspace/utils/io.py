"""Atomic file writes (a reader, or a crash, never sees a half-written result) and the checked reading of jsonl files."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from gradspace.errors import GradspaceError
from gradspace.utils.run_config import redact_environment_secrets

RESULTS_FILE = "results.json"  # what every entry point writes into its output directory; sweeps are read by it


def check_output_dir(directory: str | os.PathLike, setting: str = "paths.output_dir") -> Path:
    """Refuse an output directory that is a file, or lies under one, before any work: the first write into it
    would fail only after the model loaded."""
    path = Path(directory)
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                raise GradspaceError(f"{setting}={directory} is no directory ({part} is a file); "
                                     f"choose a directory with {setting}=<dir>")
            break
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")


def is_timing(key: str) -> bool:
    """Whether a results entry is a wall-clock time (it goes to timings.json, not results.json)."""
    return key.endswith(("seconds", "per_second"))


def split_timings(value: Any) -> tuple[Any, Any]:
    """(value without its timing entries — keys ending in `seconds` or `per_second` —, those entries at the same paths).

    Results of a run are what it measured and are identical for the same config and seed; how long it took
    is not, so timings live in a file of their own.
    """
    if isinstance(value, dict):
        kept, timed = {}, {}
        for key, item in value.items():
            if is_timing(str(key)):
                timed[key] = item
                continue
            kept[key], sub_timed = split_timings(item)
            if sub_timed:
                timed[key] = sub_timed
        return kept, timed
    if isinstance(value, list):
        parts = [split_timings(item) for item in value]
        timed = [sub_timed for _, sub_timed in parts]
        return [kept for kept, _ in parts], timed if any(timed) else []
    return value, None


def relative_to_run(value: Any, output_dir: str | os.PathLike) -> Any:
    """`value` with every path inside the run directory written relative to it (`.` for the directory itself).

    The same config and seed must write the same results wherever the run lives; the run directory (and what
    derives from it: checkpoint paths, Lightning's default_root_dir) is the one thing that differs.
    """
    # The roots once per call, not per value: a probe's results hold millions of numbers (realpath on each took
    # most of a 67-task probe's final minute and a half).
    roots = sorted({str(Path(output_dir)), os.path.realpath(output_dir)}, key=len, reverse=True)

    def relative(item: Any) -> Any:
        if isinstance(item, dict):
            return {key: relative(sub) for key, sub in item.items()}
        if isinstance(item, list):
            return [relative(sub) for sub in item]
        if isinstance(item, str):
            for root in roots:
                if item == root:
                    return "."
                if item.startswith(root + os.sep):
                    return item[len(root) + 1 :]
        return item

    return relative(value)


def write_results(output_dir: str | os.PathLike, results: dict) -> Path:
    """Write `results.json` (reproducible: paths inside the run directory relative to it) and `timings.json`
    (wall-clock times), each atomically, with the environment's secrets redacted wherever they occur."""
    kept, timed = split_timings(redact_environment_secrets(relative_to_run(results, output_dir)))
    # results.json first: readers take a run as finished by it, so a failed write of it leaves no timings behind.
    path = atomic_write_json(Path(output_dir) / RESULTS_FILE, kept)
    atomic_write_json(Path(output_dir) / "timings.json", timed or {})
    return path


def jsonl_objects(path: str | os.PathLike, expected: str) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a UTF-8 jsonl file; a line that is not UTF-8, not JSON or no
    object stops with one error naming the file and line (`expected`: what an object holds)."""
    with Path(path).open("rb") as handle:
        for line_number, raw in enumerate(handle, start=1):
            try:
                # A byte-order mark, which Windows editors put at the start of a UTF-8 file, is no part of the text.
                line = raw.decode("utf-8-sig" if line_number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise GradspaceError(
                    f"{path}:{line_number}: not UTF-8 text (byte 0x{raw[err.start]:02x} at column {err.start + 1}); "
                    f"save the file as UTF-8"
                ) from None
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as err:
                raise GradspaceError(f"{path}:{line_number}: not valid JSON ({err.msg}); fix or remove that line") from None
            if not isinstance(value, dict):
                raise GradspaceError(f"{path}:{line_number}: expected a JSON object with {expected}")
            yield line_number, value
