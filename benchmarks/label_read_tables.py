"""The tables of issue 30 from `label.py` runs of a descent through a readout that reads the label (results.json with
timings.json beside it): per run, each feature's descent label and held-out AUROC beside the frequent-word scan's
(baselines.frequent_scan: the same readout scanned over the 2,000 allowed words most frequent in English) and both
times; then one line per run: on how many features the descent's AUROC is at least the scan's, how many labels are
accepted words, and the descent's time over the scan's (goal: at most 1/5). The scan depends on the splits, not the
seed: a run with evaluation.frequent_scan_words=0 is compared with the scan of another run given. `--traces` adds, per
feature, its restarts' objective trace and whether the descent's label reaches the scan's objective.

    python benchmarks/label_read_tables.py <run dir>/results.json [...]
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from gradspace.labeling.results import FeatureLabel, LabelResults, ScoredLabel


@dataclass
class Timed:
    """A labelled feature's result with its descent's time, and the frequent-word scan compared with it (its time
    merged in)."""

    result: FeatureLabel
    descent_seconds: float
    frequent: ScoredLabel | None


def load(path: Path) -> tuple[LabelResults, list[Timed]]:
    """The run's results and each labelled feature's result with its timings (`frequent`: its frequent-word scan, None
    where the run had evaluation.frequent_scan_words=0)."""
    results = LabelResults.read(path)
    timings = json.loads((path.parent / "timings.json").read_text())
    features = []
    for result, timed in zip(results.features, timings["features"]):
        if result.label is None:
            continue
        frequent = result.baselines.frequent_scan
        if frequent is not None:
            frequent.seconds = timed["baselines"]["frequent_scan"]["seconds"]
        features.append(Timed(result, timed["descent_seconds"], frequent))
    return results, features


def table(features: list[Timed]) -> list[str]:
    lines = ["| feature | descent label (accepted) | AUROC | frequent-scan label (accepted) | AUROC | descent s | scan s |",
             "|---|---|---|---|---|---|---|"]
    for f in features:
        scan, result = f.frequent, f.result
        lines.append(f"| {result.feature} | {result.label} ({result.accepted}) | {result.heldout_auroc:.3f} | {scan.label} "
                     f"({scan.accepted}) | {scan.heldout_auroc:.3f} | {f.descent_seconds:.1f} | {scan.seconds:.1f} |")
    return lines


def across_runs(runs: list[list[Timed]]) -> list[str]:
    """One row per feature over several runs of one model (seeds): each run's descent label and AUROC, then the scan's."""
    lines = ["| feature | descent label, AUROC per run | frequent-scan label, AUROC | descent AUROC >= scan's |", "|---|---|---|---|"]
    by_feature: dict[str, list[Timed]] = {}
    for features in runs:
        for f in features:
            by_feature.setdefault(f.result.feature, []).append(f)
    for name, timed in by_feature.items():
        scan = timed[0].frequent
        labels = " / ".join(f"{f.result.label} {f.result.heldout_auroc:.3f}" for f in timed)
        wins = sum(f.result.heldout_auroc >= scan.heldout_auroc for f in timed)
        lines.append(f"| {name} | {labels} | {scan.label} {scan.heldout_auroc:.3f} | {wins} of {len(timed)} |")
    return lines


def summary(name: str, features: list[Timed]) -> str:
    wins = sum(f.result.heldout_auroc >= f.frequent.heldout_auroc for f in features)
    descent = sum(f.descent_seconds for f in features)
    scan = sum(f.frequent.seconds for f in features)
    return (f"{name}: descent AUROC >= frequent scan's on {wins} of {len(features)}; mean AUROC descent "
            f"{statistics.mean(f.result.heldout_auroc for f in features):.3f} / scan "
            f"{statistics.mean(f.frequent.heldout_auroc for f in features):.3f}; accepted words descent "
            f"{sum(bool(f.result.accepted) for f in features)} / scan {sum(bool(f.frequent.accepted) for f in features)}; "
            f"time descent {descent:.0f} s / scan {scan:.0f} s = {descent / scan:.2f}x (goal <= 0.2x)")


def traces(results: LabelResults, features: list[Timed], steps: int = 4) -> list[str]:
    """Per labelled feature, its objective trace: at a few steps of the soft labels' training, each restart's top
    token and the readout's balanced cross-entropy (the objective's prediction term); then the objective the
    selected label and the frequent-word scan's label reach on the training and validation words. A descent label
    of higher objective than the scan's missed the scan's optimum; one of lower objective but lower held-out AUROC
    found a better optimum the held-out words disagree with."""
    points = results.trajectory
    shown = sorted({round(i * (len(points) - 1) / (steps - 1)) for i in range(steps)})
    row_of = {f.feature: k for k, f in enumerate(f for f in results.features if f.label is not None)}  # the trained ones
    header = " | ".join(f"step {points[i]['step']}" for i in shown)
    lines = [f"| feature | {header} | descent label, objective | scan label, objective | descent missed the scan's optimum |",
             "|---|" + "---|" * len(shown) + "---|---|---|"]
    for f in features:
        k = row_of[f.result.feature]
        cells = " | ".join(", ".join(f"{token} {loss:.2f}" for token, loss in zip(points[i]["top_token"][k], points[i]["prediction_loss"][k]))
                           for i in shown)
        gap = f.result.objective - f.frequent.objective
        missed = "tie" if abs(gap) < 1e-4 else "yes" if gap > 0 else "no"
        lines.append(f"| {f.result.feature} | {cells} | {f.result.label}, {f.result.objective:.3f} | {f.frequent.label}, "
                     f"{f.frequent.objective:.3f} | {missed} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", type=Path)
    parser.add_argument("--group", action="append", default=[], metavar="NAME=FEATURE,FEATURE,...",
                        help="a summary line per run for these features (the first dozen, the fresh lists); default: all")
    parser.add_argument("--traces", action="store_true", help="per feature, its restarts' trace and the objective the "
                        "descent's label and the scan's label reach")
    args = parser.parse_args()
    groups = [(name, set(members.split(","))) for name, members in (g.split("=", 1) for g in args.group)] or [("all", None)]
    runs = {path: load(path) for path in args.results}
    # The scan depends on the splits only, not on the seed: a run without it takes it from another run of the model.
    scans = {(results.model.name, f.result.feature): f.frequent for results, features in runs.values() for f in features
             if f.frequent}

    def with_scans(results: LabelResults, features: list[Timed]) -> list[Timed]:
        return [Timed(f.result, f.descent_seconds, f.frequent or scans[results.model.name, f.result.feature])
                for f in features if f.frequent or (results.model.name, f.result.feature) in scans]

    summaries = []
    for path, (results, features) in runs.items():
        features = with_scans(results, features)
        name = f"{results.model.name} seed {results.config.get('seed')}"
        print(f"\n{path}: {name}, prompt {results.prompt.template!r}\n")
        print("\n".join(table(features)))
        if args.traces and results.trajectory and "prediction_loss" in results.trajectory[0]:
            print(f"\n{name}: the objective's trace per restart (top token, prediction loss)\n")
            print("\n".join(traces(results, features)))
        for group, members in groups:
            chosen = [f for f in features if members is None or f.result.feature in members]
            if not chosen:
                continue
            unlabelled = [f.feature for f in results.features if f.label is None and (members is None or f.feature in members)]
            summaries.append(summary(f"{name}, {group}", chosen) + (f"; no label (oracle below the minimum): {', '.join(unlabelled)}"
                                                                     if unlabelled else ""))
    models = dict.fromkeys(results.model.name for results, _ in runs.values())
    for model in models:
        print(f"\n{model}, every run given:\n")
        print("\n".join(across_runs([with_scans(results, features) for results, features in runs.values()
                                      if results.model.name == model])))
    print()
    print("\n".join(summaries))


if __name__ == "__main__":
    main()
