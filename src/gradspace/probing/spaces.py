"""Each task space as results.json holds it (its matrix and its comparison with the hypothesis), and the summaries
over spaces and checkpoints."""

from __future__ import annotations

import numpy as np

from gradspace.probing.gradient_similarity import OVERALL, GradientSpace
from gradspace.probing.hypothesis import compare_with_hypothesis, within_minus_across
from gradspace.probing.transfer import matrix_to_json


def space_entry(matrix: np.ndarray, tasks: list[str], phenomena: dict, symmetric: bool, n_permutations: int,
                seed: int) -> dict:
    comparison = compare_with_hypothesis(matrix, tasks, phenomena, symmetric=symmetric, n_permutations=n_permutations,
                                         seed=seed)
    return {"matrix": matrix_to_json(matrix), "symmetric": symmetric, "hypothesis": comparison.to_dict()}


def gradient_entries(space: GradientSpace, objective: str, tasks: list[str], phenomena: dict, n_permutations: int,
                     seed: int) -> dict:
    """`gradient_<objective>_<cosine|jaccard>`: the overall space, with one entry per layer and module group."""
    entries = {}
    for measure, compute in (("cosine", space.cosine), ("jaccard", space.jaccard)):
        levels = {level: space_entry(compute(level), tasks, phenomena, True, n_permutations, seed) for level in space.levels()}
        entries[f"gradient_{objective}_{measure}"] = {**levels[OVERALL],
                                                       "levels": {k: v for k, v in levels.items() if k != OVERALL}}
    return entries


def summary_rows(checkpoints: list[dict]) -> list[dict]:
    """One row per checkpoint and space: within and across means, their difference and the Spearman correlation."""
    rows = []
    for entry in checkpoints:
        for name, space in entry["spaces"].items():
            h = space["hypothesis"]
            rows.append({"checkpoint": entry["checkpoint"], "model": entry["model"], "revision": entry["revision"],
                         "step": entry["step"], "space": name, "within": h["within_mean"], "across": h["across_mean"],
                         "within_minus_across": within_minus_across(h["within_mean"], h["across_mean"]),
                         "spearman": h["spearman"], "p_value": h["p_value"]})
    return rows


def trends(rows: list[dict]) -> list[dict]:
    """Per model and space: within − across and Spearman at each of its checkpoints."""
    out = []
    for model in dict.fromkeys(row["model"] for row in rows):
        for space in dict.fromkeys(row["space"] for row in rows if row["model"] == model):
            points = [row for row in rows if row["model"] == model and row["space"] == space]
            out.append({"model": model, "space": space, "revisions": [r["revision"] for r in points],
                        "within_minus_across": [r["within_minus_across"] for r in points],
                        "within": [r["within"] for r in points], "spearman": [r["spearman"] for r in points]})
    return out
