"""Minimal-pair data: one record type, several sources, task selection and splits."""

from gradspace.pairs import MinimalPair, read_pairs_jsonl, write_pairs_jsonl  # re-exported: the record every suite is made of

__all__ = ["MinimalPair", "read_pairs_jsonl", "write_pairs_jsonl"]
