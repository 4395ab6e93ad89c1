"""Minimal-pair data: one record type, several sources, task selection and splits."""

from gradspace.pairs import (  # re-exported: the record every suite is made of
    MinimalPair,
    read_pairs_jsonl,
    write_pairs_jsonl,
)

__all__ = ["MinimalPair", "read_pairs_jsonl", "write_pairs_jsonl"]
