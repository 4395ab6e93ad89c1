"""The tables of the exact scan from `label.py` runs (results.json files): per run, each feature's label, the scan's
label beside it (baselines.vocabulary_scan), the oracle (and, with context in the prompt, the word-alone oracle), a
two-token label's best one-token label, and the second model's score of the label (evaluation.scorer_model); then one
summary line per run: mean held-out AUROC of the label and of the scan, accepted words of each, and for a descent how
often its label lies above the scan's objective (its own objective's minimum).

    python benchmarks/label_scan_tables.py <run dir>/results.json [...]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from gradspace.labeling.results import FeatureLabel, LabelResults


def fmt(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def table(results: LabelResults) -> list[str]:
    lines = ["| feature | method | label (accepted) | held-out AUROC | scan label (accepted) | scan AUROC | oracle | word-alone oracle "
             "| one-token label, AUROC | scorer: label AUROC / oracle |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for f in results.features:
        word_alone = f.oracle_word_alone and f.oracle_word_alone.heldout_auroc
        if f.label is None:
            lines.append(f"| {f.feature} | – | no label: oracle {fmt(f.oracle.heldout_auroc)} | | | | | {fmt(word_alone)} | | |")
            continue
        scan, one, scorer = f.baselines.vocabulary_scan, f.one_token, f.scorer
        lines.append(
            f"| {f.feature} | {f.method} | {f.label} ({f.accepted}) | {fmt(f.heldout_auroc)} | "
            f"{'–' if scan is None else scan.label} ({scan and scan.accepted}) | {fmt(scan and scan.heldout_auroc)} | "
            f"{fmt(f.oracle and f.oracle.heldout_auroc)} | {fmt(word_alone)} | "
            f"{'–' if not one else one.label + ', ' + fmt(one.heldout_auroc)} | "
            f"{'–' if not scorer else scorer.model + ': ' + fmt(scorer.heldout_auroc) + ' / ' + fmt(scorer.oracle_auroc)} |")
    return lines


def summary(results: LabelResults) -> str:
    labelled = [f for f in results.features if isinstance(f, FeatureLabel)]
    scanned = [f for f in labelled if f.baselines.vocabulary_scan]
    line = (f"{results.model.name} seed {results.config.get('seed')} ({results.method}): {len(labelled)} labelled; "
            f"mean held-out AUROC label {statistics.mean(f.heldout_auroc for f in labelled):.3f}")
    if scanned:
        line += (f" / scan {statistics.mean(f.baselines.vocabulary_scan.heldout_auroc for f in scanned):.3f}; accepted "
                 f"words label {sum(bool(f.accepted) for f in labelled)} / scan "
                 f"{sum(bool(f.baselines.vocabulary_scan.accepted) for f in scanned)}")
        if results.method != "scan":
            above = sum(f.objective > f.baselines.vocabulary_scan.objective + 1e-9 for f in scanned)
            line += f"; the descent's label above its objective's minimum on {above} of {len(scanned)}"
    scored = [f.scorer for f in labelled if f.scorer and f.scorer.heldout_auroc is not None]
    if scored:
        line += (f"; scored by {scored[0].model}: mean AUROC {statistics.mean(s.heldout_auroc for s in scored):.3f} "
                 f"(its oracle {statistics.mean(s.oracle_auroc for s in scored if s.oracle_auroc is not None):.3f})")
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", nargs="+", type=Path)
    args = parser.parse_args()
    summaries = []
    for path in args.results:
        results = LabelResults.read(path)
        print(f"\n{path}: {results.model.name}, prompt {results.prompt.template!r}\n")
        print("\n".join(table(results)))
        summaries.append(summary(results))
    print()
    print("\n".join(summaries))


if __name__ == "__main__":
    main()
