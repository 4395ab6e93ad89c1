"""FTGD step vs a plain language-model fine-tuning step on the same tokens: time and peak memory.

    python benchmarks/bench_ftgd_step.py
    python benchmarks/bench_ftgd_step.py --model-dir /path/to/save_pretrained/dir --pairs-per-step 32

One step = forward, backward, AdamW update, zero_grad, on a batch collated beforehand (tokenization is not timed).
- FTGD: `objective_loss(model, collate_pairs(tokenizer, pairs, objective), objective)`: good and bad sentences in one
  padded batch, loss on the pair margins.
- LM: the Hugging Face causal-LM loss (`labels=input_ids`, padding ignored) on exactly the same padded batch of good
  and bad sentences: the step any LM fine-tuning would take on these tokens.
Each side has its own copy of the model and optimizer; steps alternate FTGD, LM, FTGD, ... after a warm-up.
Goal: FTGD <= 1.2x the LM step's time and peak memory (default objective `bounded`; the others are shown too).
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch

from harness import Goal, interleaved_medians, pin_threads, print_header
from memory import mib, peak_memory

from gradspace.ftgd.objectives import PAIR_OBJECTIVES, collate_pairs, objective_loss
from gradspace.models.loading import default_cache_dir, load_model


def synth_pairs_and_model_dir():
    from gradspace.synth.pretrain import PretrainConfig, ensure_synth_model
    from gradspace.synth.world import WorldConfig, load_or_build_world

    cache = default_cache_dir()
    root = ensure_synth_model("synth-1m", WorldConfig(), PretrainConfig(), cache)
    return load_or_build_world(WorldConfig(), cache).pairs, root / "main"


class Stepper:
    """A model copy with its own AdamW; `step(i)` trains on batch i (cycling)."""

    def __init__(self, model: torch.nn.Module, batches: list, loss_fn) -> None:
        self.model = copy.deepcopy(model).train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.batches = batches
        self.loss_fn = loss_fn
        self.calls = 0

    def step(self) -> None:
        batch = self.batches[self.calls % len(self.batches)]
        self.calls += 1
        loss = self.loss_fn(self.model, batch)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def lm_loss(model, pair_batch) -> torch.Tensor:
    batch = pair_batch.batch
    labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
    return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=labels).loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", help="a save_pretrained directory (default: synth-1m on the synthetic suite)")
    parser.add_argument("--blimp-dir", default="/work/shared/data/blimp", help="pairs for --model-dir")
    parser.add_argument("--pairs-per-step", type=int, default=16)
    parser.add_argument("--batches", type=int, default=8, help="distinct batches cycled through")
    parser.add_argument("--repeats", type=int, default=20, help="timed steps per side")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    pin_threads(args.threads)
    print_header("FTGD step vs plain LM fine-tuning step on the same tokens")
    if args.model_dir:
        from gradspace.data.suite import read_pairs_dir

        pairs, model_dir = read_pairs_dir(args.blimp_dir), Path(args.model_dir)
    else:
        pairs, model_dir = synth_pairs_and_model_dir()
    device = torch.device(args.device)
    loaded = load_model({"name": "bench", "source": "local", "path": str(model_dir)}, device=device, progress=False)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(pairs), generator=generator).tolist()
    chosen = [[pairs[i] for i in order[b * args.pairs_per_step : (b + 1) * args.pairs_per_step]] for b in range(args.batches)]
    n_params = sum(p.numel() for p in loaded.model.parameters())
    print(f"model {model_dir} ({n_params / 1e6:.2f}M parameters) on {device}; {args.pairs_per_step} pairs per step "
          f"= {2 * args.pairs_per_step} padded sentences; AdamW")

    goals = []
    for objective in PAIR_OBJECTIVES:
        batches = [collate_pairs(loaded.tokenizer, group, objective).to(device) for group in chosen]
        ftgd = Stepper(loaded.model, batches, lambda model, batch, o=objective: objective_loss(model, batch, o)[0])
        lm = Stepper(loaded.model, batches, lm_loss)
        seconds = interleaved_medians({"ftgd": ftgd.step, "lm": lm.step}, repeats=args.repeats, warmup=2)
        memory = {name: peak_memory(stepper.step, device) for name, stepper in (("ftgd", ftgd), ("lm", lm))}
        time_ratio = seconds["ftgd"] / seconds["lm"]
        memory_ratio = memory["ftgd"].peak_bytes / memory["lm"].peak_bytes
        print(f"-- objective {objective}: step {1e3 * seconds['ftgd']:.1f} ms vs LM {1e3 * seconds['lm']:.1f} ms; "
              f"peak {mib(memory['ftgd'].peak_bytes)} vs {mib(memory['lm'].peak_bytes)} "
              f"(of which the step added {mib(memory['ftgd'].added_bytes)} vs {mib(memory['lm'].added_bytes)})")
        for goal in (Goal(f"{objective} FTGD/LM step time", time_ratio, 1.2, at_most=True),
                     Goal(f"{objective} FTGD/LM step peak memory", memory_ratio, 1.2, at_most=True)):
            print(goal.line())
            goals.append(goal)
    print("summary: " + "; ".join(f"{g.name} {'MET' if g.met else 'NOT MET'}" for g in goals))


if __name__ == "__main__":
    main()
