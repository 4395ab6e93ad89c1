"""BLiMP accuracy of a real pretrained LM, overall and per linguistics_term, with its document-start token (and with
the tokenizer's BOS, the old choice), the scores checked against minicons and against plain transformers code given
the same prefix.

    python benchmarks/blimp_real.py --model smollm2-135m --work-dir benchmarks/results/blimp/smollm2-135m --bos-pairs-per-paradigm 100
    python benchmarks/blimp_real.py --model gemma3-270m --work-dir benchmarks/results/blimp/gemma3-270m --batch-size 128
    python benchmarks/blimp_real.py --model gemma3-270m --work-dir /tmp/gemma --pairs-per-paradigm 10   # a sample

(in a venv with `pip install -e '.[real,bench]'`). All 67 x 1000 pairs take hours on a CPU (one thread: SmolLM2
about 14 pairs/s, Gemma about 7), so the work is done in stages, each paradigm's scores saved in `--work-dir` as
soon as they exist: the same command run again continues where a killed run stopped, and the project keeps the
scores of its full runs under benchmarks/results/blimp/ (committed as they came, across sessions), so that every
number in RESULTS.md can be recomputed from them. The stages, cheap ones first so that the checks exist early:
- plain:     `--reference-pairs-per-paradigm` pairs, one unpadded forward per sentence, transformers and torch only;
- minicons:  `--check-pairs-per-paradigm` pairs, `IncrementalLMScorer.sequence_score` (bench_scoring's setup, its
             token ids checked against gradspace's); skipped with a note where minicons is not installed;
- gradspace: every pair, `score_pairs` (shared-prefix pairs, whole-sentence scores), the configured prefix token;
- bos:       `--bos-pairs-per-paradigm` pairs with the tokenizer's BOS as prefix; nothing to do where it is the
             configured token (Gemma's `<bos>`).
Every score is log p(sentence | prefix token) summed over the sentence's tokens, in float64 from float32 logits.
Prints markdown tables and writes the numbers as JSON (`--out`, default `<work-dir>/results.json`).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench_scoring import DEFAULT_BLIMP_DIR, first_per_task, real_setup, run_minicons  # noqa: E402
from gradspace.evaluation.minimal_pairs import score_pairs  # noqa: E402
from gradspace.models.loading import load_model  # noqa: E402
from gradspace.models.prefix_token import PREFIX_ATTRIBUTE, prefix_token_id  # noqa: E402
from gradspace.utils.io import atomic_write_json  # noqa: E402
from harness import machine_line, pin_threads  # noqa: E402


def plain_reference(model, tokenizer, sentences: list[str], prefix_id: int) -> np.ndarray:
    """One unpadded forward per sentence with nothing but transformers and torch."""
    scores = []
    for sentence in sentences:
        ids = torch.tensor([[prefix_id] + tokenizer(sentence, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), dim=-1)
        scores.append(float(logprobs.gather(-1, ids[0, 1:, None]).sum()))
    return np.array(scores)


def run_stage(work_dir: Path, stage: str, by_paradigm: dict[str, list], count: int, score, from_end: bool) -> None:
    """Scores the first `count` pairs of every paradigm with `score(pairs) -> (good, bad)`, one file per paradigm,
    skipping the paradigms a previous run, or a second process going through them `from_end`, has finished."""
    done = lambda paradigm: (work_dir / stage / f"{paradigm}.json").exists()  # noqa: E731
    todo = [paradigm for paradigm in sorted(by_paradigm, reverse=from_end) if not done(paradigm)]
    if not todo:
        return
    print(f"[{stage}] {len(todo)} of {len(by_paradigm)} paradigms to score, {count} pairs each", flush=True)
    for number, paradigm in enumerate(todo, 1):
        if done(paradigm):
            continue
        pairs = by_paradigm[paradigm][:count]
        start = time.perf_counter()
        good, bad = score(pairs)
        seconds = time.perf_counter() - start
        atomic_write_json(work_dir / stage / f"{paradigm}.json", {
            "good": [float(v) for v in good], "bad": [float(v) for v in bad], "seconds": seconds,
            "load_average": os.getloadavg()[0],
        })
        print(f"[{stage}] {number}/{len(todo)} {paradigm}: {len(pairs)} pairs in {seconds:.0f} s "
              f"({len(pairs) / seconds:.2f} pairs/s, load {os.getloadavg()[0]:.1f})", flush=True)


def read_stage(work_dir: Path, stage: str, by_paradigm: dict[str, list]) -> dict[str, dict] | None:
    """Every paradigm's saved scores of `stage`, or None while any is missing."""
    files = {paradigm: work_dir / stage / f"{paradigm}.json" for paradigm in sorted(by_paradigm)}
    if not all(path.exists() for path in files.values()):
        return None
    return {paradigm: json.loads(path.read_text()) for paradigm, path in files.items()}


def accuracy_by_term(by_paradigm: dict[str, list], scored: dict[str, dict]) -> dict[str, float]:
    right: dict[str, list[bool]] = defaultdict(list)
    for paradigm, scores in scored.items():
        term = by_paradigm[paradigm][0].phenomenon
        for good, bad in zip(scores["good"], scores["bad"]):
            right[term].append(good > bad)
            right["overall"].append(good > bad)
    return {term: sum(values) / len(values) for term, values in sorted(right.items())}


def agreement(ours: dict[str, dict], theirs: dict[str, dict]) -> dict:
    """Decisions that differ and the largest score and margin gaps, on the pairs `theirs` scored."""
    score_gap = margin_gap = 0.0
    different = pairs = 0
    for paradigm, other in theirs.items():
        n = len(other["good"])
        good, bad = np.array(ours[paradigm]["good"][:n]), np.array(ours[paradigm]["bad"][:n])
        other_good, other_bad = np.array(other["good"]), np.array(other["bad"])
        score_gap = max(score_gap, float(np.abs(np.concatenate([good - other_good, bad - other_bad])).max()))
        margin_gap = max(margin_gap, float(np.abs((good - bad) - (other_good - other_bad)).max()))
        different += int(((good > bad) != (other_good > other_bad)).sum())
        pairs += n
    return {"pairs": pairs, "decisions_different": different, "max_score_gap": score_gap, "max_margin_gap": margin_gap}


def throughput(scored: dict[str, dict]) -> dict:
    pairs = sum(len(scores["good"]) for scores in scored.values())
    seconds = sum(scores["seconds"] for scores in scored.values())
    loads = [scores["load_average"] for scores in scored.values()]
    return {"pairs": pairs, "seconds": seconds, "pairs_per_second": pairs / seconds,
            "load_average_range": [min(loads), max(loads)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", choices=("smollm2-135m", "gemma3-270m"))
    parser.add_argument("--blimp-dir", default=DEFAULT_BLIMP_DIR)
    parser.add_argument("--work-dir", required=True, help="where each paradigm's scores are kept; rerun to continue")
    parser.add_argument("--pairs-per-paradigm", type=int, default=1000)
    parser.add_argument("--bos-pairs-per-paradigm", type=int, default=1000)
    parser.add_argument("--check-pairs-per-paradigm", type=int, default=10, help="pairs also scored by minicons")
    parser.add_argument("--reference-pairs-per-paradigm", type=int, default=3, help="pairs also scored by plain code")
    parser.add_argument("--batch-size", type=int, default=64, help="sentences per forward pass")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--from-end", action="store_true",
                        help="go through the paradigms from the last: a second process on the same work dir")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    pin_threads(args.threads)
    print(machine_line(), flush=True)
    work_dir = Path(args.work_dir)

    setup = real_setup(args.model, args.blimp_dir, args.pairs_per_paradigm)
    loaded = load_model({"name": args.model, "source": "local", "path": str(setup.model_dir),
                         "prefix_token": setup.prefix_token}, progress=False)
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    by_paradigm: dict[str, list] = defaultdict(list)
    for pair in setup.pairs:
        by_paradigm[pair.task].append(pair)
    configured, bos = prefix_token_id(tokenizer), tokenizer.bos_token_id

    def ours(pairs):
        return score_pairs(model, tokenizer, pairs, batch_size=args.batch_size, desc="pairs")

    run_stage(work_dir, "plain", by_paradigm, args.reference_pairs_per_paradigm,
              lambda pairs: np.split(plain_reference(model, tokenizer, [p.good for p in pairs] + [p.bad for p in pairs],
                                                     configured), 2), args.from_end)
    try:
        check_pairs = first_per_task(setup.pairs, args.check_pairs_per_paradigm)
        minicons = run_minicons(setup.model_dir, check_pairs, args.batch_size, "cpu", tokenizer)

        def theirs(pairs):
            result = minicons(pairs)
            return result.good, result.bad

        run_stage(work_dir, "minicons", by_paradigm, args.check_pairs_per_paradigm, theirs, args.from_end)
    except ImportError:
        print("minicons is not installed here (pip install -e '.[bench]'): its check is left out")
    run_stage(work_dir, "gradspace", by_paradigm, args.pairs_per_paradigm, ours, args.from_end)
    if bos != configured:
        setattr(tokenizer, PREFIX_ATTRIBUTE, bos)
        run_stage(work_dir, "bos", by_paradigm, args.bos_pairs_per_paradigm, ours, args.from_end)
        setattr(tokenizer, PREFIX_ATTRIBUTE, configured)

    stages = {stage: read_stage(work_dir, stage, by_paradigm) for stage in ("plain", "minicons", "gradspace", "bos")}
    gradspace = stages["gradspace"]
    results = {
        "model": args.model, "machine": machine_line(), "pairs": sum(len(pairs) for pairs in by_paradigm.values()),
        "paradigms": len(by_paradigm), "prefix_token": tokenizer.convert_ids_to_tokens(configured),
        "bos_token": tokenizer.convert_ids_to_tokens(bos), "accuracy": accuracy_by_term(by_paradigm, gradspace),
        "throughput": {stage: throughput(scored) for stage, scored in stages.items() if scored},
        "agreement": {stage: agreement(gradspace, stages[stage]) for stage in ("plain", "minicons") if stages[stage]},
    }
    if stages["bos"]:
        same_pairs = {paradigm: {key: scores[key][: len(stages["bos"][paradigm]["good"])] for key in ("good", "bad")}
                      for paradigm, scores in gradspace.items()}
        results["bos_accuracy"] = accuracy_by_term(by_paradigm, stages["bos"])
        results["accuracy_on_bos_pairs"] = accuracy_by_term(by_paradigm, same_pairs)
        results["decisions_changed_by_prefix"] = agreement(same_pairs, stages["bos"])["decisions_different"]
    atomic_write_json(args.out or work_dir / "results.json", results)

    bos_column = "bos_accuracy" in results
    print(f"\n{args.model}: {results['pairs']} BLiMP pairs, {results['paradigms']} paradigms, prefix "
          f"{results['prefix_token']}" + (f"; the old choice, BOS {results['bos_token']}" if bos_column else
                                          " (the tokenizer's BOS as well)"))
    # With BOS the pairs may be fewer (--bos-pairs-per-paradigm): both prefixes are compared on those pairs.
    print("| term | accuracy |" + (" same pairs as BOS | accuracy with BOS |" if bos_column else "") + "\n|---|---|"
          + ("---|---|" if bos_column else ""))
    for term, value in results["accuracy"].items():
        print(f"| {term} | {value:.3f} |" + (f" {results['accuracy_on_bos_pairs'][term]:.3f} | "
                                            f"{results['bos_accuracy'][term]:.3f} |" if bos_column else ""))
    if bos_column:
        print(f"decisions changed by the prefix: {results['decisions_changed_by_prefix']} of "
              f"{sum(len(s['good']) for s in stages['bos'].values())}")
    for stage, check in results["agreement"].items():
        print(f"gradspace vs {stage} on {check['pairs']} pairs: {check['decisions_different']} decisions different, "
              f"max score gap {check['max_score_gap']:.2e}, max margin gap {check['max_margin_gap']:.2e}")
    for stage, speed in results["throughput"].items():
        print(f"{stage}: {speed['pairs']} pairs in {speed['seconds']:.0f} s, {speed['pairs_per_second']:.2f} pairs/s "
              f"(load average {speed['load_average_range'][0]:.1f}-{speed['load_average_range'][1]:.1f})")


if __name__ == "__main__":
    main()
