"""BLiMP accuracy of a real pretrained LM, overall and per linguistics_term, with its document-start token and with
the tokenizer's BOS (the old choice), plus agreement with plain transformers code given the same prefix.

    python benchmarks/blimp_real.py --model smollm2-135m                      # all 67 x 1000 pairs (hours on a CPU)
    python benchmarks/blimp_real.py --model gemma3-270m --pairs-per-paradigm 10 --out /tmp/gemma.json

Prints a markdown table and writes the numbers as JSON (`--out`).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from harness import machine_line, pin_threads  # noqa: E402

from gradspace.data.suite import read_pairs_dir  # noqa: E402
from gradspace.evaluation.logprobs import PREFIX_ATTRIBUTE, prefix_token_id  # noqa: E402
from gradspace.evaluation.minimal_pairs import score_sentences  # noqa: E402
from gradspace.models.loading import load_model  # noqa: E402
from gradspace.utils.io import atomic_write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def accuracy_by_term(pairs, good: torch.Tensor, bad: torch.Tensor) -> dict[str, float]:
    right: dict[str, list[bool]] = defaultdict(list)
    for pair, g, b in zip(pairs, good.tolist(), bad.tolist()):
        right[pair.phenomenon].append(g > b)
        right["overall"].append(g > b)
    return {term: sum(values) / len(values) for term, values in sorted(right.items())}


def plain_reference(model, tokenizer, sentences: list[str], prefix_id: int) -> torch.Tensor:
    """One unpadded forward per sentence with nothing but transformers and torch."""
    scores = []
    for sentence in sentences:
        ids = torch.tensor([[prefix_id] + tokenizer(sentence, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), dim=-1)
        scores.append(float(logprobs.gather(-1, ids[0, 1:, None]).sum()))
    return torch.tensor(scores, dtype=torch.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="a config name under conf/model")
    parser.add_argument("--blimp-dir", default=str(REPO.parent / "shared" / "data" / "blimp"))
    parser.add_argument("--pairs-per-paradigm", type=int, default=1000)
    parser.add_argument("--reference-pairs", type=int, default=30, help="pairs also scored by plain transformers code")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    pin_threads(args.threads)
    print(machine_line())

    loaded = load_model(OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "model" / f"{args.model}.yaml")), progress=False)
    model, tokenizer = loaded.model.eval(), loaded.tokenizer
    by_paradigm: dict[str, list] = defaultdict(list)
    for pair in read_pairs_dir(args.blimp_dir):
        if len(by_paradigm[pair.task]) < args.pairs_per_paradigm:
            by_paradigm[pair.task].append(pair)
    pairs = [pair for paradigm in sorted(by_paradigm) for pair in by_paradigm[paradigm]]
    sentences = [pair.good for pair in pairs] + [pair.bad for pair in pairs]

    configured = prefix_token_id(tokenizer)
    results = {"model": args.model, "pairs": len(pairs), "paradigms": len(by_paradigm), "prefixes": {}}
    for name, token_id in (("configured", configured), ("bos", tokenizer.bos_token_id)):
        setattr(tokenizer, PREFIX_ATTRIBUTE, token_id)
        start = time.perf_counter()
        scores = score_sentences(model, tokenizer, sentences, batch_size=args.batch_size, desc=f"{args.model} prefix {name}")
        seconds = time.perf_counter() - start
        good, bad = scores[: len(pairs)], scores[len(pairs) :]
        results["prefixes"][name] = {
            "token": tokenizer.convert_ids_to_tokens(token_id), "accuracy": accuracy_by_term(pairs, good, bad),
            "seconds": seconds, "pairs_per_second": len(pairs) / seconds,
            "decisions": (good > bad).tolist(),
        }
    setattr(tokenizer, PREFIX_ATTRIBUTE, configured)
    flips = sum(a != b for a, b in zip(results["prefixes"]["configured"]["decisions"], results["prefixes"]["bos"]["decisions"]))
    results["decisions_changed_by_prefix"] = flips

    # Agreement with plain transformers code on a spread of pairs (every k-th), same prefix.
    step = max(1, len(pairs) // max(1, args.reference_pairs))
    sample = pairs[::step][: args.reference_pairs]
    sample_sentences = [p.good for p in sample] + [p.bad for p in sample]
    ours = score_sentences(model, tokenizer, sample_sentences, batch_size=args.batch_size)
    reference = plain_reference(model, tokenizer, sample_sentences, configured)
    n = len(sample)
    results["reference"] = {
        "pairs": n, "max_score_gap": float((ours - reference).abs().max()),
        "decisions_different": int(((ours[:n] > ours[n:]) != (reference[:n] > reference[n:])).sum()),
    }
    for prefix in results["prefixes"].values():
        del prefix["decisions"]
    if args.out:
        atomic_write_json(args.out, results)

    terms = sorted(results["prefixes"]["configured"]["accuracy"])
    tokens = {name: prefix["token"] for name, prefix in results["prefixes"].items()}
    print(f"\n{args.model}: {len(pairs)} BLiMP pairs ({args.pairs_per_paradigm} per paradigm, {len(by_paradigm)} paradigms)")
    print(f"| term | prefix {tokens['configured']} | prefix {tokens['bos']} (BOS) |\n|---|---|---|")
    for term in terms:
        print(f"| {term} | {results['prefixes']['configured']['accuracy'][term]:.3f} | {results['prefixes']['bos']['accuracy'][term]:.3f} |")
    print(f"decisions changed by the prefix: {flips} of {len(pairs)}")
    print(f"plain transformers on {n} pairs: max score gap {results['reference']['max_score_gap']:.2e}, "
          f"decisions different {results['reference']['decisions_different']}")
    for name, prefix in results["prefixes"].items():
        print(f"prefix {name}: {prefix['pairs_per_second']:.2f} pairs/s ({prefix['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
