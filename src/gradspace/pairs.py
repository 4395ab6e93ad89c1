"""The minimal-pair record and its BLiMP-format jsonl reader and writer."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from gradspace.errors import GradspaceError
from gradspace.utils.io import atomic_write_text, jsonl_objects


@dataclass(frozen=True)
class MinimalPair:
    """A grammatical sentence and its ungrammatical twin.

    `task` is the paradigm (a BLiMP UID or a synthetic task name); `phenomenon` the group it belongs to
    (BLiMP `linguistics_term` or the synthetic group), which is the hypothesis the task space is compared with.
    """

    good: str
    bad: str
    task: str
    phenomenon: str
    id: str
    # Where the pair was read (`file.jsonl:12`), so that a problem found later can name the line; not part of its identity.
    source: str = field(default="", compare=False, repr=False)

    def to_blimp(self) -> dict:
        """The BLiMP field names, so synthetic suites are readable by BLiMP tooling."""
        return {
            "sentence_good": self.good,
            "sentence_bad": self.bad,
            "UID": self.task,
            "linguistics_term": self.phenomenon,
            "pairID": self.id,
        }

    def to_dict(self) -> dict:
        return asdict(self)


_REPORTED_IDENTICAL: set[tuple[str, tuple[int, ...]]] = set()


def read_pairs_jsonl(path: str | Path, task: str | None = None, phenomenon: str | None = None) -> list[MinimalPair]:
    """Read BLiMP-format jsonl (`sentence_good`, `sentence_bad`, optional `UID`, `linguistics_term`, `pairID`).

    A user file needs only the two sentences: the task defaults to the file's stem and the phenomenon to the task.
    """
    path = Path(path)
    if not path.is_file():
        raise GradspaceError(f"{path}: no such file; give the path of a jsonl file with sentence_good/sentence_bad")
    pairs: list[MinimalPair] = []
    identical: list[int] = []  # lines whose two sentences are the same: no minimal pair, scored 0 and trained on for nothing
    for line_number, record in jsonl_objects(path, "sentence_good and sentence_bad"):
        missing = [key for key in ("sentence_good", "sentence_bad") if not isinstance(record.get(key), str) or not record[key].strip()]
        if missing:
            raise GradspaceError(f"{path}:{line_number}: missing or empty field(s) {', '.join(missing)}; every line needs sentence_good and sentence_bad")
        where = f"{path}:{line_number}"
        for key in ("sentence_good", "sentence_bad"):
            check_encodable(record[key], key, where)
        if record["sentence_good"].strip() == record["sentence_bad"].strip():
            identical.append(line_number)
            continue
        pair_task = task or name_field(record, "UID", where) or path.stem
        pairs.append(
            MinimalPair(
                good=record["sentence_good"],
                bad=record["sentence_bad"],
                task=pair_task,
                phenomenon=phenomenon or name_field(record, "linguistics_term", where) or pair_task,
                id=str(record.get("pairID", line_number - 1)),
                source=f"{path}:{line_number}",
            )
        )
    if identical and (str(path), tuple(identical)) not in _REPORTED_IDENTICAL:
        # Not an error: the real BLiMP files have 7 such pairs (passive_1, principle_A_case_2). Said once per
        # process: a probe reads the suite again for every copy it fine-tunes.
        _REPORTED_IDENTICAL.add((str(path), tuple(identical)))
        print(f"warning: {path}: left out line(s) {', '.join(map(str, identical))}, whose sentence_good and "
              f"sentence_bad are the same sentence; fix or remove them", file=sys.stderr)
    if not pairs:
        raise GradspaceError(f"{path}: no minimal pairs in the file; it needs one JSON object per line"
                             + (" whose two sentences differ" if identical else ""))
    return pairs


def check_encodable(text: str, key: str, where: str) -> None:
    """JSON can spell a lone surrogate (`"\\ud800"`), which is no character: every tokenizer and file write fails on it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise GradspaceError(
            f"{where}: {key} holds a lone surrogate (\\u{ord(text[err.start]):04x} at character {err.start + 1}), which "
            f"is no character; write the intended character itself, or a surrogate pair for one beyond U+FFFF"
        ) from None


def name_field(record: dict, key: str, where: str) -> str | None:
    """A task or phenomenon name from `record[key]`, which must be a text; None if absent.

    Anything else (a number, a list, NaN, Infinity) fails later where names are sorted, compared or made paths.
    """
    value = record.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise GradspaceError(f"{where}: {key}={json.dumps(value)} is not a name; give {key} as a text such as \"sva\" "
                             f"(or leave it out to use the file's name)")
    check_encodable(value, key, where)
    return value


def write_pairs_jsonl(path: str | Path, pairs: Iterable[MinimalPair]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(pair.to_blimp()) + "\n" for pair in pairs))


def pairs_fingerprint(pairs: Iterable[MinimalPair]) -> str:
    """A key for a list of pairs, in order (task and both sentences of each)."""
    digest = hashlib.sha256()
    for pair in pairs:
        digest.update(f"{pair.task}\t{pair.good}\t{pair.bad}\n".encode())
    return digest.hexdigest()
