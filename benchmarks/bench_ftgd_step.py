"""FTGD's whole train.py step vs a plain LM fine-tuning step through the same entry point: time and peak memory.

    python benchmarks/bench_ftgd_step.py --blimp-dir ../shared/data/blimp        # SmolLM2-135M on real BLiMP
    python benchmarks/bench_ftgd_step.py --model synth-1m --task sva                # the synthetic world, seconds

Every run is a `train.py` run: `gradspace.ftgd.run.run` on the composed train config (objective, mask hooks,
gradient clipping, the measurement callbacks, Lightning's logging), plus a callback that times every step from the
end of the previous one (data loading and collation included) and records the tensor-memory peak of one step.

What "the same budget" means: FTGD reads two sentences per pair (good and bad), the LM baseline one (the good).
- ftgd:            objective=bounded, B pairs a step = 2B sentences;
- lm, same tokens: objective=lm, 2B pairs a step = 2B sentences: the same number of sentences forward and backward,
                   the fair comparison of what a step costs. Goal: ftgd <= 1.2x this, in time and peak memory.
- lm, same pairs:  objective=lm, B pairs a step = B sentences: train.py's baseline as configured (same pairs, same
                   steps), which reads half the sentences, so it is about 2x cheaper by construction.
First one untimed run of each side (the first runs in a process are slower: allocator, caches); then R rounds of
one run per side, S steps a run, the order rotating each round; each run's first step is warm-up. The
parts of each run (training steps vs the before/after evaluation and held-out loss) are printed too, so a run's
fit time can be read: with the GGUF budget, evaluation dominates a short run.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from omegaconf import open_dict

from gradspace.ftgd.results import TrainResults
from gradspace.ftgd.run import run as run_ftgd
from gradspace.utils.hydra_compose import compose_config
from harness import Goal, StepTimer, print_header
from memory import mib

TIMERS: dict[str, StepTimer] = {}  # by run, so the benchmark finds the callback Hydra built


def registered_timer(profile_step: int, key: str) -> StepTimer:
    """What the run's callback config names: a StepTimer, kept under `key`."""
    TIMERS[key] = StepTimer(profile_step)
    return TIMERS[key]


def train_cfg(args, objective: str, pairs_per_step: int, output_dir: Path):
    overrides = [
        f"model={args.model}", f"task={args.task}", f"objective={objective}", "logger=none", "callbacks=no_checkpoints",
        f"ftgd.max_steps={args.steps}", f"ftgd.batch_size={pairs_per_step}", f"torch_threads={args.threads}",
        "data.eval_all_tasks=false", "data.max_eval_pairs_per_task=2", "heldout.max_sentences=8",
        "+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false",
    ]
    if args.blimp_dir:
        overrides.append(f"paths.blimp_dir={args.blimp_dir}")
    cfg = compose_config("train", [*overrides, *args.override])
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def timed_run(args, objective: str, pairs_per_step: int, output_dir: Path) -> tuple[StepTimer, TrainResults]:
    """One train.py run with a StepTimer among its callbacks (Hydra builds it, as it builds the others)."""
    cfg = train_cfg(args, objective, pairs_per_step, output_dir)
    key = str(output_dir)
    with open_dict(cfg):
        cfg.callbacks.step_timer = {"_target_": f"{__name__}.registered_timer", "profile_step": args.steps - 1, "key": key}
    results = run_ftgd(cfg)
    return TIMERS.pop(key), results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="a model config name under conf/model")
    parser.add_argument("--task", default="sva", help="a task config name under conf/task")
    parser.add_argument("--blimp-dir", default=None, help="folder of the BLiMP jsonl files (real models)")
    parser.add_argument("--pairs-per-step", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="steps per run: the first is warm-up, the last is profiled")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output-dir", default="/tmp/gradspace-bench/ftgd-step")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="a train.py override for every run, e.g. model.path=<dir> with --model local (repeatable)")
    args = parser.parse_args()
    if args.steps < 3:
        parser.error("--steps must be at least 3 (warm-up, timed, profiled)")

    print_header("FTGD train.py step vs plain LM fine-tuning step through the same entry point")
    b = args.pairs_per_step
    sides = {"ftgd": ("bounded", b), "lm same tokens": ("lm", 2 * b), "lm same pairs": ("lm", b)}
    print(f"model={args.model} task={args.task}; ftgd: {b} pairs = {2 * b} sentences a step; lm same tokens: {2 * b} pairs "
          f"= {2 * b} sentences; lm same pairs: {b} pairs = {b} sentences; {args.steps} steps a run, {args.rounds} rounds")
    seconds: dict[str, list[float]] = {side: [] for side in sides}
    peaks: dict[str, list[int]] = {side: [] for side in sides}
    names = list(sides)
    for side, (objective, pairs) in sides.items():
        timed_run(args, objective, pairs, Path(args.output_dir) / f"warmup-{side.replace(' ', '_')}")
    for round_index in range(args.rounds):
        for side in names[round_index % len(names):] + names[: round_index % len(names)]:
            objective, pairs = sides[side]
            timer, results = timed_run(args, objective, pairs, Path(args.output_dir) / f"{round_index}-{side.replace(' ', '_')}")
            steps = timer.seconds[1:]  # the first is warm-up
            seconds[side].extend(steps)
            peaks[side].append(timer.peak.peak_bytes)
            training = sum(timer.seconds) + (statistics.median(steps) if steps else 0.0)  # the profiled step at a timed step's cost
            print(f"  round {round_index} {side:15s}: steps {', '.join(f'{s:.2f}' for s in steps)} s; peak {mib(timer.peak.peak_bytes)}; "
                  f"fit {results.fit_seconds:.1f} s = training ~{training:.1f} s + evaluation and held-out ~{results.fit_seconds - training:.1f} s")
    median = {side: statistics.median(values) for side, values in seconds.items()}
    peak = {side: max(values) for side, values in peaks.items()}
    for side in sides:
        print(f"-- {side}: median step {median[side]:.2f} s over {len(seconds[side])} steps; peak tensor memory {mib(peak[side])}")
    goals = [Goal("FTGD/LM step time, same tokens", median["ftgd"] / median["lm same tokens"], 1.2, at_most=True),
             Goal("FTGD/LM step peak memory, same tokens", peak["ftgd"] / peak["lm same tokens"], 1.2, at_most=True)]
    for goal in goals:
        print(goal.line())
    print(f"ratio FTGD/LM step time, same pairs (half the sentences) = {median['ftgd'] / median['lm same pairs']:.2f}x (no goal)")
    print(f"ratio FTGD/LM step peak memory, same pairs = {peak['ftgd'] / peak['lm same pairs']:.2f}x (no goal)")
    print("summary: " + "; ".join(f"{g.name} {'MET' if g.met else 'NOT MET'}" for g in goals))


if __name__ == "__main__":
    main()
