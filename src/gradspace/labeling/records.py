"""Activation records: context-dependent features given as examples in text (`feature=records feature.path=<jsonl>`).

One JSON object a line: {"feature": str, "text": str, "char_start": int, "char_end": int, "activation": float}. The
span text[char_start:char_end] is the word the activation belongs to and the text before it its context; the
feature is active where activation > `feature.threshold`. Each record becomes an `Example` whose context is the
tokens before the span (in the tokenization of the whole text) and whose word is the span's text, so the same word
can be active in one sentence and inactive in another, which no word-alone readout can tell apart.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from gradspace.errors import GradspaceError
from gradspace.labeling.features import FeatureData, split_three
from gradspace.labeling.prompts import Example, word_token_id
from gradspace.pairs import check_encodable
from gradspace.utils.io import jsonl_objects

FIELDS = {"feature": str, "text": str, "char_start": int, "char_end": int, "activation": (int, float)}


@dataclass(frozen=True)
class ActivationRecord:
    feature: str
    text: str
    char_start: int
    char_end: int
    activation: float
    line: int  # 1-based line in its file, for error messages


def read_records(path: str | Path) -> list[ActivationRecord]:
    """Every record of a jsonl file, checked field by field; a bad line stops with one error naming it."""
    file = Path(str(path)).expanduser()
    if file.is_dir():
        raise GradspaceError(f"feature.path={file} is a directory; point it at a jsonl file of activation records")
    if not file.is_file():
        raise GradspaceError(f"feature.path={file} does not exist; point it at a jsonl file of activation records")
    records = []
    for number, value in jsonl_objects(file, f"keys {', '.join(FIELDS)}"):
        where = f"{file}:{number}"
        for key, kind in FIELDS.items():
            if key not in value:
                raise GradspaceError(f"{where}: the record has no '{key}'; every record needs {', '.join(FIELDS)}")
            if not isinstance(value[key], kind) or isinstance(value[key], bool):
                raise GradspaceError(f"{where}: '{key}' must be {'a number' if key == 'activation' else kind.__name__}, "
                                     f"got {value[key]!r}")
        text, start, end, activation = value["text"], value["char_start"], value["char_end"], float(value["activation"])
        if not math.isfinite(activation):
            raise GradspaceError(f"{where}: activation {value['activation']!r} is not a finite number")
        if not 0 <= start < end <= len(text):
            raise GradspaceError(f"{where}: the span [{start}, {end}) lies outside its text of {len(text)} characters; "
                                 f"char_start and char_end index the text, with char_start < char_end")
        if not text[start:end].strip() or text[start:end] != text[start:end].strip():
            raise GradspaceError(f"{where}: the span {text[start:end]!r} must be a word without surrounding spaces")
        check_encodable(text, "text", where)
        records.append(ActivationRecord(value["feature"], text, start, end, activation, number))
    if not records:
        raise GradspaceError(f"{file} holds no records; write one JSON object a line with keys {', '.join(FIELDS)}")
    return records


def record_example(record: ActivationRecord, tokenizer, file: Path, max_context_tokens: int) -> Example:
    """The record as an example: the tokens before its span (the whole text tokenized once, so the context reads as
    in the text; the last `max_context_tokens` of them, the text nearest the word) and the span's text as the word;
    the span must start and end on token boundaries."""
    encoded = tokenizer(record.text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    # A token may carry the space before its word (SentencePiece's ▁), so its offset can start one character early.
    starts = {}
    for index, (start, _) in enumerate(offsets):
        starts.setdefault(start, index)
        if start < len(record.text) and record.text[start].isspace():
            starts.setdefault(start + 1, index)
    first = starts.get(record.char_start)
    ends = {end for _, end in offsets}
    if first is None or record.char_end not in ends:
        raise GradspaceError(f"{file}:{record.line}: the span {record.text[record.char_start:record.char_end]!r} "
                             f"[{record.char_start}, {record.char_end}) does not start and end on this tokenizer's token "
                             f"boundaries; give the span of whole tokens (a whole word)")
    word = record.text[record.char_start : record.char_end]
    token = word_token_id(tokenizer, word)
    return Example(ids[first] if token is None else token, tuple(ids[max(0, first - max_context_tokens) : first]), word)


def record_features(path: str | Path, ids: Sequence[str], labels: Mapping[str, Sequence[str]], threshold: float, tokenizer,
                    heldout_fraction: float, validation_fraction: float, seed: int, top_n: int, max_context_tokens: int
                    ) -> list[FeatureData]:
    """One feature per name in the file (or those in `ids`): its records above `threshold` active, the rest inactive,
    each class split into training, validation and held-out records."""
    file = Path(str(path)).expanduser()
    records = read_records(file)
    names = list(dict.fromkeys(r.feature for r in records))
    unknown = [name for name in ids if name not in names]
    if unknown:
        raise GradspaceError(f"feature.ids {unknown} have no records in {file} (it has {', '.join(names)}); fix feature.ids")
    # Every span is checked against the tokenizer before any feature is built: the first bad line is the one named.
    examples = [record_example(r, tokenizer, file, max_context_tokens) for r in records]
    example_of = {r.line: e for r, e in zip(records, examples)}
    features = []
    for name in ids or names:
        mine = [r for r in records if r.feature == name]
        active = [r for r in mine if r.activation > threshold]
        inactive = [r for r in mine if r.activation <= threshold]
        if len(active) < 3 or len(inactive) < 3:
            raise GradspaceError(f"{file}:{mine[0].line}: feature '{name}' has {len(active)} active and {len(inactive)} inactive "
                                 f"records (activation > feature.threshold={threshold}); it needs at least 3 of each to train, "
                                 f"validate and hold out")
        rng = random.Random(f"{seed}:{name}")
        parts = [split_three([example_of[r.line] for r in group], heldout_fraction, validation_fraction, rng)
                 for group in (active, inactive)]
        strongest = sorted(active, key=lambda r: -r.activation)[:top_n]
        feature = FeatureData(
            name=name,
            train_positive=parts[0][0], validation_positive=parts[0][1], heldout_positive=parts[0][2],
            train_negative=parts[1][0], validation_negative=parts[1][1], heldout_negative=parts[1][2],
            label_words=[str(w) for w in (labels or {}).get(name, ())],
            top_activating_tokens=[example_of[r.line].token for r in strongest],
        )
        feature.check()
        features.append(feature)
    return features
