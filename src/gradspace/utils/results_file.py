"""Reading a results.json back into the dataclass its entry point wrote it from, refusing a file of another schema."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

from gradspace.errors import GradspaceError


def read_json(path: Path, source: str, rerun: str) -> Any:
    """The JSON of `path`; one line naming `source` and `rerun` (what writes the file again) when it is unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise GradspaceError(f"{source}: unreadable {Path(path).name} ({type(err).__name__}); {rerun}") from None


def checked_fields(result_class: type, data: Any, version: int, source: str, rerun: str,
                   optional: tuple[str, ...] = (), unwritten: tuple[str, ...] = (), place: str = "") -> dict[str, Any]:
    """`data` as keyword arguments of `result_class` (a dataclass with a `schema_version` field), refusing another
    schema_version, an unknown field and a missing one. `optional`: fields a file may lack (timings, which go to
    timings.json); `unwritten`: fields that are never written; `place`: where a nested object lies in the file
    (`features[2].baselines`), which carries no schema_version of its own."""
    where = f" at {place}" if place else ""
    if not isinstance(data, dict):
        raise GradspaceError(f"{source}: no JSON object{where}; {rerun}")
    if not place and data.get("schema_version") != version:
        raise GradspaceError(f"{source}: results of schema_version {data.get('schema_version')}, this gradspace reads "
                             f"{version}; {rerun} with this version")
    known = [item.name for item in fields(result_class) if item.name not in unwritten]
    unknown = sorted(set(data) - set(known))
    missing = [name for name in known if name not in data and name not in optional]
    if unknown or missing:
        problem = f"unknown field {unknown[0]}" if unknown else f"no field {missing[0]}"
        raise GradspaceError(f"{source}: {problem}{where} for results of schema_version {version}; {rerun} with this version")
    return {**{name: None for name in optional}, **data}
