"""Gradient-similarity memory as the number of tasks grows (4, 16, 67 BLiMP paradigms): flat, not linear.

    python benchmarks/bench_similarity_memory.py
    python benchmarks/bench_similarity_memory.py --hidden-size 512 --pairs-per-task 16

Each task count runs in a fresh process: load the model, stream every task's gradient (the FTGD `bounded`
objective over its first pairs) into a `GradientSpace`, then build the overall and per-kind cosine and Jaccard
matrices, as `probe.py` does. Reported per count: how much the process's peak RSS rose during that pass (the one
gradient, activations, temporaries and the accumulated state; the model was loaded before) and `state_bytes`.
(RSS, not the torch profiler's tensor timeline: profiling a pass of 67 backward passes costs gigabytes itself.
The children run with glibc's mmap threshold fixed at 128 KiB, so freed large temporaries go back to the system
and RSS follows live memory; with glibc's default sliding threshold the peak also holds heap fragmentation, which
varied from run to run by 200 MiB here.)
Storing every task's full gradient would grow by one gradient per task; the accumulator should grow by a small
fraction of that. The issue asks for "flat, not linear" without numbers; the bounds here: memory added at 67 tasks
<= 1.5x that at 4 tasks (flat; keeping gradients would be 16.8x), and growth per task <= 0.1x one gradient (not
linear; keeping gradients would be 1x). The state's own share per task is about 2 x top_fraction of a gradient
(two top sets of int32 indices) plus groups x sketch_dim floats, whatever the model size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import torch

from gradspace.data.suite import read_pairs_dir
from gradspace.models.architecture import MODULE_KINDS
from gradspace.probing.gradient_similarity import OVERALL, GradientSpace, GradientSpaceConfig
from gradspace.probing.task_gradients import add_task_gradients
from harness import Goal, pin_threads, print_header
from memory import mib

TASK_COUNTS = (4, 16, 67)


def build_model_dir(args) -> Path:
    """A random GPT-NeoX with the BPE tokenizer bench_scoring.py trains on BLiMP, saved once under its bench dir."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from bench_scoring import BENCH_DIR, train_bpe_tokenizer

    model_dir = BENCH_DIR / f"blimp-neox-h{args.hidden_size}-l{args.layers}-bpe{args.bpe_vocab_size}"
    if not (model_dir / "config.json").is_file():
        pairs = read_pairs_dir(args.blimp_dir)
        tokenizer = train_bpe_tokenizer([s for pair in pairs for s in (pair.good, pair.bad)], args.bpe_vocab_size)
        torch.manual_seed(0)
        model = GPTNeoXForCausalLM(GPTNeoXConfig(
            vocab_size=len(tokenizer), hidden_size=args.hidden_size, num_hidden_layers=args.layers,
            num_attention_heads=4, intermediate_size=4 * args.hidden_size, max_position_embeddings=128,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
        ))
        model.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
    return model_dir


def current_rss_bytes() -> int:
    with open("/proc/self/statm", encoding="utf-8") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(args) -> None:
    """One task count in this (fresh) process; prints one JSON line."""
    from gradspace.models.loading import load_model

    pin_threads(args.threads)
    loaded = load_model({"name": "bench", "source": "local", "path": args.model_dir}, progress=False)
    by_task: dict[str, list] = defaultdict(list)
    for pair in read_pairs_dir(args.blimp_dir):
        if len(by_task[pair.task]) < args.pairs_per_task:
            by_task[pair.task].append(pair)
    chosen = dict(list(by_task.items())[: args.tasks])
    if len(chosen) < args.tasks:
        raise SystemExit(f"only {len(chosen)} tasks in {args.blimp_dir}, asked for {args.tasks}")
    spaces = []

    def probe() -> None:
        space = GradientSpace.for_model(loaded.model, GradientSpaceConfig(sketch_dim=args.sketch_dim))
        for _ in add_task_gradients(space, loaded.model, loaded.tokenizer, chosen, "bounded", batch_size=args.pairs_per_task):
            pass
        for level in (OVERALL, *[kind for kind in MODULE_KINDS if kind in space.levels()]):
            space.cosine(level)
            space.jaccard(level)
        spaces.append(space)

    rss_before = current_rss_bytes()
    probe()
    gradient_bytes = sum(p.numel() * p.element_size() for p in loaded.model.parameters() if p.requires_grad)
    print(json.dumps({
        "tasks": args.tasks, "state_bytes": spaces[0].state_bytes(), "gradient_bytes": gradient_bytes,
        "groups": len(spaces[0].groups), "rss_before_bytes": rss_before,
        "added_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before,
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blimp-dir", default="/work/shared/data/blimp")
    parser.add_argument("--pairs-per-task", type=int, default=8)
    parser.add_argument("--sketch-dim", type=int, default=GradientSpaceConfig.sketch_dim)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--bpe-vocab-size", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tasks", type=int, help=argparse.SUPPRESS)  # set for the child process
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tasks:
        child(args)
        return

    pin_threads(args.threads)
    print_header("gradient-similarity memory vs number of tasks")
    model_dir = build_model_dir(args)
    rows = []
    for count in TASK_COUNTS:
        command = [sys.executable, __file__, "--tasks", str(count), "--model-dir", str(model_dir),
                   *[f"--{key.replace('_', '-')}={value}" for key, value in vars(args).items()
                     if key in ("blimp_dir", "pairs_per_task", "sketch_dim", "threads")]]
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
        done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
        if done.returncode != 0:
            raise SystemExit(f"child for {count} tasks failed:\n{done.stderr[-3000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    gradient = rows[0]["gradient_bytes"]
    print(f"model {model_dir}: {gradient / 4 / 1e6:.2f}M parameters, one gradient = {mib(gradient)}, "
          f"{rows[0]['groups']} module groups, sketch_dim {args.sketch_dim}, {args.pairs_per_task} pairs per task")
    for row in rows:
        print(f"{row['tasks']:>3} tasks: peak RSS rose {mib(row['added_bytes'])} during the pass (from "
              f"{mib(row['rss_before_bytes'])} after loading), accumulated state {mib(row['state_bytes'])}; "
              f"keeping full per-task gradients would hold {mib(row['tasks'] * gradient)}")
    first, last = rows[0], rows[-1]
    growth_per_task = (last["added_bytes"] - first["added_bytes"]) / (last["tasks"] - first["tasks"])
    goals = [
        Goal(f"memory added {last['tasks']}/{first['tasks']} tasks", last["added_bytes"] / first["added_bytes"], 1.5, at_most=True),
        Goal("memory growth per task / one gradient", growth_per_task / gradient, 0.1, at_most=True),
    ]
    for goal in goals:
        print(goal.line())
    print(f"(keeping every gradient grows by 1.00x of one gradient per task; the accumulated state alone is "
          f"{first['state_bytes'] / first['tasks'] / gradient:.3f}x per task)")
    print("summary: " + "; ".join(f"{g.name} {'MET' if g.met else 'NOT MET'}" for g in goals))


if __name__ == "__main__":
    main()
