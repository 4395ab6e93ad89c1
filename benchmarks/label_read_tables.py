"""The tables of issue 30 from `label.py` runs of a descent through a readout that reads the label (results.json with
timings.json beside it): per run, each feature's descent label and held-out AUROC beside the frequent-word scan's
(baselines.frequent_scan: the same readout scanned over the 2,000 allowed words most frequent in English) and both
times; then one line per run: on how many features the descent's AUROC is at least the scan's, how many labels are
accepted words, and the descent's time over the scan's (goal: at most 1/5). The scan depends on the splits, not the
seed: runs with evaluation.frequent_scan_words=0 (seeds 1, 2) are compared with the scan of another run given.

    python benchmarks/label_read_tables.py <run dir>/results.json [...]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def load(path: Path) -> tuple[str, list[dict]]:
    """The run's model name and each labelled feature's result with its timings merged in (`frequent`: its frequent-word
    scan, None where the run had evaluation.frequent_scan_words=0)."""
    results = json.loads(path.read_text())
    timings = json.loads((path.parent / "timings.json").read_text())
    features = []
    for result, timed in zip(results["features"], timings["features"]):
        if result["label"] is None:
            continue
        frequent = result["baselines"].get("frequent_scan")
        if frequent is not None:
            frequent = {**frequent, **timed["baselines"]["frequent_scan"]}
        features.append({**result, "descent_seconds": timed["descent_seconds"], "frequent": frequent})
    return results["model"]["name"], features


def table(features: list[dict]) -> list[str]:
    lines = ["| feature | descent label (accepted) | AUROC | frequent-scan label (accepted) | AUROC | descent s | scan s |",
             "|---|---|---|---|---|---|---|"]
    for f in features:
        scan = f["frequent"]
        lines.append(f"| {f['feature']} | {f['label']} ({f['accepted']}) | {f['heldout_auroc']:.3f} | {scan['label']} "
                     f"({scan['accepted']}) | {scan['heldout_auroc']:.3f} | {f['descent_seconds']:.1f} | {scan['seconds']:.1f} |")
    return lines


def across_runs(runs: list[list[dict]]) -> list[str]:
    """One row per feature over several runs of one model (seeds): each run's descent label and AUROC, then the scan's."""
    lines = ["| feature | descent label, AUROC per run | frequent-scan label, AUROC | descent AUROC >= scan's |", "|---|---|---|---|"]
    by_feature: dict[str, list[dict]] = {}
    for features in runs:
        for f in features:
            by_feature.setdefault(f["feature"], []).append(f)
    for name, results in by_feature.items():
        scan = results[0]["frequent"]
        labels = " / ".join(f"{f['label']} {f['heldout_auroc']:.3f}" for f in results)
        wins = sum(f["heldout_auroc"] >= scan["heldout_auroc"] for f in results)
        lines.append(f"| {name} | {labels} | {scan['label']} {scan['heldout_auroc']:.3f} | {wins} of {len(results)} |")
    return lines


def summary(name: str, features: list[dict]) -> str:
    wins = sum(f["heldout_auroc"] >= f["frequent"]["heldout_auroc"] for f in features)
    descent = sum(f["descent_seconds"] for f in features)
    scan = sum(f["frequent"]["seconds"] for f in features)
    return (f"{name}: descent AUROC >= frequent scan's on {wins} of {len(features)}; mean AUROC descent "
            f"{statistics.mean(f['heldout_auroc'] for f in features):.3f} / scan "
            f"{statistics.mean(f['frequent']['heldout_auroc'] for f in features):.3f}; accepted words descent "
            f"{sum(bool(f['accepted']) for f in features)} / scan {sum(bool(f['frequent']['accepted']) for f in features)}; "
            f"time descent {descent:.0f} s / scan {scan:.0f} s = {descent / scan:.2f}x (goal <= 0.2x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", type=Path)
    parser.add_argument("--group", action="append", default=[], metavar="NAME=FEATURE,FEATURE,...",
                        help="a summary line per run for these features (the first dozen, the fresh lists); default: all")
    args = parser.parse_args()
    groups = [(name, set(members.split(","))) for name, members in (g.split("=", 1) for g in args.group)] or [("all", None)]
    runs = {path: load(path) for path in args.results}
    # The scan depends on the splits only, not on the seed: a run without it takes it from another run of the model.
    scans = {(model, f["feature"]): f["frequent"] for model, features in runs.values() for f in features if f["frequent"]}
    summaries = []
    for path, (model, features) in runs.items():
        results = json.loads(path.read_text())
        features = [{**f, "frequent": scans[model, f["feature"]]} for f in features if (model, f["feature"]) in scans]
        name = f"{results['model']['name']} seed {results['config'].get('seed')}"
        print(f"\n{path}: {name}, prompt {results['prompt']['template']!r}\n")
        print("\n".join(table(features)))
        for group, members in groups:
            chosen = [f for f in features if members is None or f["feature"] in members]
            if not chosen:
                continue
            unlabelled = [f["feature"] for f in results["features"] if f["label"] is None and (members is None or f["feature"] in members)]
            summaries.append(summary(f"{name}, {group}", chosen) + (f"; no label (oracle below the minimum): {', '.join(unlabelled)}"
                                                                     if unlabelled else ""))
    models = dict.fromkeys(model for model, _ in runs.values())
    for model in models:
        print(f"\n{model}, every run given:\n")
        print("\n".join(across_runs([[{**f, "frequent": scans[model, f["feature"]]} for f in features if (model, f["feature"]) in scans]
                                      for run_model, features in runs.values() if run_model == model])))
    print()
    print("\n".join(summaries))


if __name__ == "__main__":
    main()
