"""Peak resident memory of FTGD-shaped training steps with a tied embedding's gradient dense vs sparse.

    python benchmarks/bench_tied_embedding_memory.py --model gemma3-270m      # 262k x 640 tied embedding
    python benchmarks/bench_tied_embedding_memory.py --model smollm2-135m

Each variant runs in its own process (a process's peak RSS only grows): the model, AdamW, and `--steps` steps of
two micro-batches of 4 BLiMP pairs through FTGD's own collation and `bounded` objective, the way the term
experiment's copies train (`ftgd.micro_batch_size=4`). Printed: the peak RSS after loading, after each backward pass and after
each Adam step, for `dense` (the embedding's own dense gradient, what torch does by default) and `sparse`
(`gradspace.utils.memory.sparse_tied_embedding_gradient`, what FTGD runs with on one device), the ratio of the
peaks above the loaded model, and the weights' sum after the steps in both (equal up to float rounding).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CONF = Path(__file__).resolve().parents[1] / "conf"


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_variant(model_name: str, variant: str, blimp_dir: str, steps: int, threads: int) -> dict:
    import torch
    from omegaconf import OmegaConf

    from gradspace.ftgd.objectives import collate_pairs, objective_loss
    from gradspace.models.loading import default_cache_dir, load_model
    from gradspace.pairs import read_pairs_jsonl
    from gradspace.utils.memory import sparse_tied_embedding_gradient

    torch.set_num_threads(threads)
    model_cfg = OmegaConf.to_container(OmegaConf.load(CONF / "model" / f"{model_name}.yaml"), resolve=True)
    loaded = load_model(model_cfg, default_cache_dir(), progress=False)
    model, tokenizer = loaded.model.train(), loaded.tokenizer
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    pairs = read_pairs_jsonl(Path(blimp_dir) / "wh_vs_that_with_gap_long_distance.jsonl")
    phases = {"loaded": peak_mb()}
    with sparse_tied_embedding_gradient(model) if variant == "sparse" else contextlib.nullcontext():
        for step in range(steps):
            for micro in range(2):
                batch = collate_pairs(tokenizer, pairs[(2 * step + micro) * 4:(2 * step + micro + 1) * 4], "bounded")
                loss, _ = objective_loss(model, batch, "bounded")
                loss.backward()
                del loss
                phases[f"step {step} backward {micro}"] = peak_mb()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            phases[f"step {step} adam"] = peak_mb()
    checksum = float(sum(p.double().sum() for p in model.parameters()))
    return {"phases": phases, "checksum": checksum}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gemma3-270m", choices=("gemma3-270m", "smollm2-135m"))
    parser.add_argument("--blimp-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "blimp"))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variant", choices=("dense", "sparse"), help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.model, args.variant, args.blimp_dir, args.steps, args.threads)))
        return

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from harness import pin_threads, print_header

    pin_threads(args.threads)  # the header's thread count; each variant's process pins its own
    print_header(f"{args.model}: peak RSS of training steps, tied embedding gradient dense vs sparse")
    results = {}
    for variant in ("dense", "sparse"):
        child = subprocess.run([sys.executable, __file__, "--model", args.model, "--blimp-dir", args.blimp_dir,
                                "--steps", str(args.steps), "--threads", str(args.threads), "--variant", variant],
                               capture_output=True, text=True, check=True)
        results[variant] = json.loads(child.stdout.strip().splitlines()[-1])
    print("| phase | dense peak MiB | sparse peak MiB |\n|---|---|---|")
    for phase in results["dense"]["phases"]:
        print(f"| {phase} | {results['dense']['phases'][phase]:.0f} | {results['sparse']['phases'][phase]:.0f} |")
    above = {v: max(r["phases"].values()) - r["phases"]["loaded"] for v, r in results.items()}
    print(f"peak above the loaded model: dense {above['dense']:.0f} MiB, sparse {above['sparse']:.0f} MiB "
          f"(ratio sparse / dense = {above['sparse'] / above['dense']:.2f}x)")
    dense, sparse = results["dense"]["checksum"], results["sparse"]["checksum"]
    # The two sums of the embedding's gradient add the same numbers in another order: equal up to float rounding.
    print(f"weights after {args.steps} steps: sum dense {dense!r}, sparse {sparse!r} (relative difference "
          f"{abs(dense - sparse) / abs(dense):.1e})")


if __name__ == "__main__":
    main()
