"""Feature labeling: training steps/s with 1 feature vs K features batched in one soft-label module.

    python benchmarks/bench_labeling.py                                 # synth-1m, 32 features, goal <= 4x
    python benchmarks/bench_labeling.py --model smollm2-135m --features 8 --goal 3   # a real LM, the word lists
    python benchmarks/bench_labeling.py --device cuda      # on a GPU machine (the default there)

The `label.py` path: `SoftLabel` (K features x R restarts as rows of one parameter) trained by a Lightning
Trainer on `BalancedExamples` with the `label.yaml` settings and the model's default prompt (for a real LM the
readout the oracle check chose, `prompt.style_by_model`). On `synth-1m` the features are its 8 categories, on a
real LM the 12 word lists of conf/feature/word_lists.yaml; K features cycle through them under distinct names
(the same work as K distinct features). The goal is on the cost of the training: a whole fit of `label.steps`
steps with a fresh discriminator (nothing computed before it is kept), from its start to its last step's end.
The median step after `--warmup` steps is printed beside it (a step includes fetching its batch, the forward,
backward and Adam). The two feature counts alternate over rounds, each round a fresh fit.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import warnings
from pathlib import Path

import hydra
import lightning as L
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from gradspace.labeling.config import SoftLabelConfig, prompt_config
from gradspace.labeling.discriminator import Discriminator
from gradspace.labeling.features import category_features, word_list_features
from gradspace.labeling.prompts import PromptBuilder, resolve_prompt_spec
from gradspace.labeling.soft_label import BalancedExamples, SoftLabel, allowed_label_tokens
from gradspace.models.loading import default_cache_dir, load_model
from gradspace.synth.grammar import CATEGORIES
from gradspace.utils.run_config import config_from_section
from harness import Goal, StepTimer, default_device, pin_threads, print_header

CONF = Path(__file__).resolve().parents[1] / "conf"


def fit_seconds(loaded, builder, features, label_cfg: dict, steps: int, warmup: int, device: str) -> tuple[float, float]:
    """A fresh fit of `steps` steps: (seconds from its start to its last step's end, median step after `warmup`)."""
    config = config_from_section(SoftLabelConfig, label_cfg, "label")
    discriminator = Discriminator(loaded.model, builder)
    allowed = allowed_label_tokens(loaded.tokenizer, builder, discriminator.embedding.shape[0], config.vocabulary,
                                   config.min_letters, config.stop_words)
    optimizer = hydra.utils.instantiate(config.optimizer)
    module = SoftLabel(discriminator, allowed, [f.name for f in features], config, optimizer, total_steps=steps)
    timer = StepTimer()
    trainer = L.Trainer(accelerator="gpu" if device == "cuda" else "cpu", devices=1, max_steps=steps, max_epochs=-1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[timer])
    loader = DataLoader(BalancedExamples(features, builder, config.batch_size, loaded.tokenizer.pad_token_id, seed=0),
                        batch_size=None, num_workers=0)
    trainer.fit(module, loader)
    step_times = [later - earlier for earlier, later in zip(timer.ends, timer.ends[1:])]
    return timer.ends[-1] - timer.start, statistics.median(step_times[warmup:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="synth-1m", help="a conf/model option")
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--goal", type=float, default=4.0, help="at most this training-time ratio K features / 1")
    parser.add_argument("--restarts", type=int, help="default: label.yaml's")
    parser.add_argument("--steps", type=int, help="steps per fit; default: label.yaml's label.steps")
    parser.add_argument("--warmup", type=int, default=2, help="steps left out of the median step")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default=default_device(), choices=("cpu", "cuda"))
    args = parser.parse_args()

    pin_threads(args.threads)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # one fit per round: keep its banners out
    print_header(f"labeling steps: 1 feature vs {args.features} features batched")
    label_cfg = OmegaConf.to_container(OmegaConf.load(CONF / "label.yaml").label, resolve=True)
    if args.restarts:
        label_cfg["restarts"] = args.restarts
    prompt = prompt_config(OmegaConf.load(CONF / "prompt" / "default.yaml"))
    model_cfg = OmegaConf.to_container(OmegaConf.load(CONF / "model" / f"{args.model}.yaml"), resolve=True)
    loaded = load_model(model_cfg, default_cache_dir(), device=args.device, progress=False)
    spec = resolve_prompt_spec(prompt, loaded.tokenizer, str(model_cfg.get("source", "hf")), str(model_cfg["name"]))
    builder = PromptBuilder(spec, loaded.tokenizer, int(label_cfg["length"]), add_bos=prompt.add_bos)
    if model_cfg.get("source") == "synth":
        categories = category_features(list(CATEGORIES), loaded.tokenizer, 0.3, 0.25, 0, None)
    else:
        lists = OmegaConf.load(CONF / "feature" / "word_lists.yaml")
        sets = OmegaConf.to_container(lists.sets)
        categories = word_list_features(sets, OmegaConf.to_container(lists.labels), list(sets), None, loaded.tokenizer, 0.3, 0.25, 0, None)
    many = [dataclasses.replace(categories[i % len(categories)], name=f"{categories[i % len(categories)].name}#{i}")
            for i in range(args.features)]
    print(f"model {loaded.path} on {args.device}, readout {spec.readout} ({spec.style}); {label_cfg['restarts']} restarts, {label_cfg['batch_size']} examples per feature and "
          f"step, kl_weight {label_cfg['kl_weight']}: {label_cfg['restarts'] * label_cfg['batch_size']} prompts per "
          f"feature and step")

    steps = args.steps or int(label_cfg["steps"])
    runs: dict[int, list[tuple[float, float]]] = {1: [], args.features: []}
    for _ in range(args.rounds):
        for count, features in ((1, categories[:1]), (args.features, many)):
            runs[count].append(fit_seconds(loaded, builder, features, label_cfg, steps, args.warmup, args.device))
    (one, one_step), (batched, batched_step) = ((statistics.median(r[0] for r in runs[k]), statistics.median(r[1] for r in runs[k]))
                                                for k in (1, args.features))
    print(f"training ({steps} steps from a fresh discriminator): 1 feature {one:.1f} s, {args.features} features {batched:.1f} s; "
          f"{args.features} features one at a time would take {args.features * one:.1f} s")
    print(f"median step after {args.warmup}: 1 feature {1e3 * one_step:.1f} ms, {args.features} features {1e3 * batched_step:.1f} ms "
          f"({batched_step / one_step:.2f}x)")
    goal = Goal(f"training time {args.features} features / 1 feature", batched / one, args.goal, at_most=True)
    print(goal.line())
    print(f"ratio speedup of batching {args.features} features over one at a time = {args.features * one / batched:.2f}x (no goal)")
    print(f"summary: {goal.name} {'MET' if goal.met else 'NOT MET'}")


if __name__ == "__main__":
    main()
