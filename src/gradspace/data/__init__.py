"""Minimal-pair data: one record type, several sources, task selection and splits."""

from gradspace.data.pairs import MinimalPair, read_pairs_jsonl, write_pairs_jsonl

__all__ = ["MinimalPair", "read_pairs_jsonl", "write_pairs_jsonl"]
