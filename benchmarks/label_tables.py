"""Issue 12's tables from `label.py` runs: one markdown table per results.json (a model and a seed), and over the
seeds of a model the goal's count: features whose final label reaches >= 0.9 x the oracle's held-out AUROC and
beats the most-frequent-token baseline in at least 2 of 3 seeds, and those whose label is the category word or a
listed synonym (conf/feature/word_lists.yaml `labels`); the same count against a word list's first word (the
category's prototype as written) beside it; for SAE-latent runs, the latents whose label beats both baselines in
at least 2 seeds.

    python benchmarks/label_tables.py <run dir>/results.json [...]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from gradspace.labeling.results import FeatureLabel, LabelResults

# The goal's baseline, and beside it a word list's first word
FREQUENT, FIRST_LISTED = "most_frequent_top_activating", "first_listed"


def meets(feature: FeatureLabel, kind: str = FREQUENT) -> tuple[bool, bool]:
    """(>= 0.9 x oracle, beats the baseline `kind`); a feature without that baseline beats it."""
    auroc = feature.heldout_auroc
    near_oracle = feature.oracle is None or auroc >= 0.9 * feature.oracle.heldout_auroc
    return near_oracle, beats_baseline(feature, auroc, kind)


def beats_baseline(feature: FeatureLabel, auroc: float, kind: str = FREQUENT) -> bool:
    """`auroc` above the baseline's on the same held-out words; a feature without one beats it."""
    baseline = getattr(feature.baselines, kind)
    return baseline is None or baseline.heldout_auroc is None or auroc > baseline.heldout_auroc


def category_word_beats_baseline(feature: FeatureLabel, kind: str = FREQUENT) -> bool:
    """The oracle's label (the category word) above the baseline: where it is not, only a label better than the
    category word itself meets the goal."""
    return feature.oracle is not None and beats_baseline(feature, feature.oracle.heldout_auroc, kind)


def beats_both_baselines(feature: FeatureLabel) -> bool:
    """An SAE latent's label above every baseline that has a held-out AUROC (most frequent word, vocabulary projection)."""
    return all(feature.heldout_auroc > b.heldout_auroc for b in feature.baselines.present().values() if b.heldout_auroc is not None)


def baseline_kinds(features: list, frequent_name: str, first_listed_name: str) -> list[tuple[str, str]]:
    """The baselines to count the goal against, with their names: the first listed word only where runs scored it."""
    listed = any(isinstance(f, FeatureLabel) and f.baselines.first_listed is not None for f in features)
    return [(FREQUENT, frequent_name)] + ([(FIRST_LISTED, first_listed_name)] if listed else [])


def baseline_text(feature: FeatureLabel, kind: str) -> str:
    baseline = getattr(feature.baselines, kind)
    if baseline is None or baseline.heldout_auroc is None:
        return "–"
    return f"{baseline.label} ({baseline.heldout_auroc:.3f})"


def latent_table(results: LabelResults) -> str:
    """SAE latents: no category word, so no oracle and no accepted words; both baselines, and what the rule saw."""
    selection = (results.sae or {}).get("selection") or {}
    density, distinct = selection.get("density", {}), selection.get("distinct_words", {})
    lines = ["| latent | density | distinct words | top-activating words | final label | stage | held-out acc / AUROC "
             "| soft-label argmax (AUROC) | most frequent (AUROC) | vocabulary projection (AUROC) | beats both |", "|---" * 11 + "|"]
    wins = 0
    for f in results.features:
        latent = f.feature.removeprefix("latent")
        beats = beats_both_baselines(f)
        wins += beats
        soft = f.soft_label
        top = ", ".join(dict.fromkeys(f.top_activating))
        lines.append(f"| {latent} | {density.get(latent, float('nan')):.4f} | {distinct.get(latent, '–')} | {top or '–'} | {f.label} | "
                     f"{f.selection.found_by} | {f.heldout_accuracy:.3f} / {f.heldout_auroc:.3f} | "
                     f"{soft.argmax} ({soft.heldout_auroc:.3f}) | {baseline_text(f, 'most_frequent_top_activating')} | "
                     f"{baseline_text(f, 'vocabulary_projection')} | {'yes' if beats else 'no'} |")
    lines += ["", f"the label beats both baselines on held-out occurrences: {wins}/{len(results.features)}; rule: "
              f"{selection.get('eligible', '?')} eligible latents over {selection.get('tokens', '?')} training tokens"]
    return "\n".join(lines)


def table(results: LabelResults) -> str:
    if results.sae:
        return latent_table(results)
    lines = ["| feature | oracle AUROC | soft-label argmax (held-out AUROC) | final label | stage | held-out acc / AUROC "
             "| ≥ 0.9 × oracle | most frequent (AUROC) | beats it | first listed (AUROC) | beats it | accepted word |",
             "|---|" * 1 + "---|" * 11]
    for f in results.features:
        if f.label is None:
            lines.append(f"| {f.feature} | {f.oracle.heldout_auroc:.3f} | – | (no label: oracle near chance) |" + " |" * 8)
            continue
        near_oracle, beats = meets(f)
        oracle = "–" if f.oracle is None else f"{f.oracle.heldout_auroc:.3f}"
        soft = f.soft_label
        beats_first = beats_baseline(f, f.heldout_auroc, FIRST_LISTED)
        lines.append(f"| {f.feature} | {oracle} | {soft.argmax} ({soft.heldout_auroc:.3f}) | {f.label} | "
                     f"{f.selection.found_by} | {f.heldout_accuracy:.3f} / {f.heldout_auroc:.3f} | "
                     f"{'yes' if near_oracle else 'no'} | {baseline_text(f, FREQUENT)} | {'yes' if beats else 'no'} | "
                     f"{baseline_text(f, FIRST_LISTED)} | {'yes' if beats_first else 'no'} | {'yes' if f.accepted else 'no'} |")
    labelled = [f for f in results.features if isinstance(f, FeatureLabel)]
    accepted = sum(bool(f.accepted) for f in labelled)
    soft_accepted = sum(bool(f.soft_label.accepted) for f in labelled)
    n = len(results.features)
    lines.append("")
    for kind, name in baseline_kinds(results.features, "against the most frequent word", "against the first listed word"):
        both = sum(all(meets(f, kind)) for f in labelled)
        category_word = sum(category_word_beats_baseline(f, kind) for f in labelled)
        lines.append(f"{name}: meets both (≥ 0.9 × oracle and beats it) {both}/{n}; the category word itself beats it {category_word}/{n}")
    lines.append(f"accepted word: {accepted}/{n}; the soft label's argmax an accepted word: {soft_accepted}/{n}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", type=Path, help="results.json files of label.py runs")
    args = parser.parse_args()
    per_model: dict[tuple[str, bool], list[LabelResults]] = defaultdict(list)
    for path in args.results:
        results = LabelResults.read(path)
        timings = json.loads((path.parent / "timings.json").read_text(encoding="utf-8"))
        seed = results.config.get("seed")
        print(f"\n{results.model.name}, seed {seed} ({path}); oracle {timings['oracle_seconds']:.0f} s, training "
              f"{timings['train_seconds']:.0f} s ({results.steps} steps)\n")
        print(table(results))
        per_model[results.model.name, bool(results.sae)].append(results)
    for (model, sae), runs in per_model.items():
        if len(runs) < 2:
            continue
        if sae:
            wins: dict[str, int] = defaultdict(int)
            for results in runs:
                for f in results.features:
                    wins[f.feature] += beats_both_baselines(f)
            print(f"\n{model} SAE latents over {len(runs)} seeds: the label beats both baselines in at least 2 seeds on "
                  f"{sum(count >= 2 for count in wins.values())}/{len(wins)}")
            continue
        features = [f for results in runs for f in results.features]
        for kind, name in baseline_kinds(features, "", " (baseline: the first listed word, not the goal's)"):
            counts: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
            for results in runs:
                for f in results.features:
                    labelled = isinstance(f, FeatureLabel)
                    counts[f.feature].append((labelled and all(meets(f, kind)), labelled and bool(f.accepted)))
            goal = sum(sum(both for both, _ in marks) >= 2 for marks in counts.values())
            accepted = sum(sum(word for _, word in marks) >= 2 for marks in counts.values())
            print(f"\n{model} over {len(runs)} seeds{name}: features meeting both in at least 2 seeds {goal}/{len(counts)} (goal 9); "
                  f"accepted word in at least 2 seeds {accepted}/{len(counts)} (goal 6)")
            print("seeds meeting both / with an accepted word, per feature: " + ", ".join(
                f"{feature} {sum(both for both, _ in marks)}/{sum(word for _, word in marks)}" for feature, marks in counts.items()))


if __name__ == "__main__":
    main()
