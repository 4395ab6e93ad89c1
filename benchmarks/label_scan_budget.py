"""The scan path's budget on a real LM: label.py's run for K word lists at once (label.method=scan), per feature the
seconds it took (oracle, scan, held-out scoring; the model load shared) and the run's peak memory, against issue 16's
goals (per feature <= 60 s and <= 4 GB on SmolLM2).

    OMP_NUM_THREADS=1 python benchmarks/label_scan_budget.py --model smollm2-135m
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

from gradspace.labeling.run import run
from harness import Goal, pin_threads, print_header

CONF = Path(__file__).resolve().parents[1] / "conf"
DOZEN = "animals,colours,numbers,countries,fruits,body_parts,emotions,professions,tools,months,sports,weather"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--features", default=DOZEN, help="comma-separated word lists of conf/feature/word_lists.yaml")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    pin_threads(args.threads)
    print_header(f"the scan path's budget: {args.model}, {len(args.features.split(','))} word lists at once")
    with tempfile.TemporaryDirectory() as out, initialize_config_dir(str(CONF), version_base=None):
        cfg = compose("label", overrides=[f"model={args.model}", "feature=word_lists", f"feature.ids=[{args.features}]",
                                          "label.method=scan", "logger=none", f"paths.output_dir={out}"])
        start = time.perf_counter()
        results = run(cfg)
        total = time.perf_counter() - start
    features = [f for f in results.features if f.label is not None]
    per_feature = max(f.wall_seconds for f in features) + results.oracle_seconds / len(results.features)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"run {total:.1f} s for {len(results.features)} features (model load included); oracle check "
          f"{results.oracle_seconds:.1f} s; slowest feature's scan and scoring {max(f.wall_seconds for f in features):.1f} s")
    print(Goal("slowest feature (its scan, scoring and share of the oracle check) / 60 s", per_feature / 60, 1.0, True).line())
    print(Goal("peak memory / 4 GB", peak_gb / 4, 1.0, True).line())


if __name__ == "__main__":
    main()
