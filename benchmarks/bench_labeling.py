"""Feature labeling: training steps/s with 1 feature vs K features batched in one soft-label module.

    python benchmarks/bench_labeling.py                                 # synth-1m, 32 features, goal <= 4x
    python benchmarks/bench_labeling.py --model smollm2-135m --features 8 --goal 3   # a real LM, the word lists
    python benchmarks/bench_labeling.py --device cuda      # on a GPU machine (the default there)

The `label.py` path, by its own stages: `SoftLabel` (K features x R restarts as rows of one parameter) trained by
`train_soft_labels` on `BalancedExamples` with the `label.yaml` settings and the model's default prompt (for a real
LM the readout the oracle check chose, `prompt.style_by_model`). On `synth-1m` the features are its categories, on a
real LM the word lists of conf/feature/word_lists.yaml; K features cycle through them under distinct names
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
import tempfile
import warnings
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from gradspace.labeling.config import LabelingConfig
from gradspace.labeling.features import FeatureData
from gradspace.labeling.methods import train_soft_labels
from gradspace.labeling.setup import build_discriminator, build_features
from gradspace.models.loading import LoadedModel, load_model
from gradspace.synth.grammar import CATEGORIES
from harness import Goal, StepTimer, default_device, pin_threads, print_header

CONF = Path(__file__).resolve().parents[1] / "conf"


def label_config(args, output_dir: str) -> DictConfig:
    """label.py's config for the benchmark: every feature of the model's kind (the synthetic categories, or the word
    lists split as the benchmark always has: a quarter of the rest for validation), no logger, no progress bar."""
    model = OmegaConf.load(CONF / "model" / f"{args.model}.yaml")
    if model.get("source") == "synth":
        features = ["feature=synth_category", f"feature.ids=[{','.join(CATEGORIES)}]"]
    else:
        names = list(OmegaConf.load(CONF / "feature" / "word_lists.yaml").sets)
        features = ["feature=word_lists", f"feature.ids=[{','.join(names)}]", "feature.validation_fraction=0.25"]
    overrides = [f"model={args.model}", *features, "logger=none", f"paths.output_dir={output_dir}",
                 f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}", "+trainer.enable_progress_bar=false",
                 *([f"label.restarts={args.restarts}"] if args.restarts else []), *([f"label.steps={args.steps}"] if args.steps else []),
                 *args.overrides]
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("label", overrides=overrides)


def fit_seconds(cfg: DictConfig, config: LabelingConfig, loaded: LoadedModel, features: list[FeatureData], warmup: int
                ) -> tuple[float, float]:
    """A fresh fit of label.steps steps by label.py's training: (seconds from its start to its last step's end, median
    step after `warmup`)."""
    _, discriminator, allowed = build_discriminator(config, cfg.model, loaded)  # fresh: nothing computed before is kept
    timer = StepTimer()
    train_soft_labels(cfg, config, discriminator, allowed, features, [], callbacks=(timer,))
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
    parser.add_argument("overrides", nargs="*", help="label.py overrides, e.g. paths.cache_dir=<dir>")
    args = parser.parse_args()

    pin_threads(args.threads)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # one fit per round: keep its banners out
    print_header(f"labeling steps: 1 feature vs {args.features} features batched")
    with tempfile.TemporaryDirectory() as output_dir:
        cfg = label_config(args, output_dir)
        config = LabelingConfig.from_config(cfg)
        cache_dir = Path(str(cfg.paths.cache_dir)).expanduser()
        loaded = load_model(cfg.model, cache_dir, device=args.device, progress=False)
        spec, _, _ = build_discriminator(config, cfg.model, loaded)
        categories, _ = build_features(config, cfg.model, loaded, cache_dir)
        many = [dataclasses.replace(categories[i % len(categories)], name=f"{categories[i % len(categories)].name}#{i}")
                for i in range(args.features)]
        label = config.label
        print(f"model {loaded.path} on {args.device}, readout {spec.readout} ({spec.style}); {label.restarts} restarts, "
              f"{label.batch_size} examples per feature and step, kl_weight {label.kl_weight}: "
              f"{label.restarts * label.batch_size} prompts per feature and step")
        runs: dict[int, list[tuple[float, float]]] = {1: [], args.features: []}
        for _ in range(args.rounds):
            for count, features in ((1, categories[:1]), (args.features, many)):
                runs[count].append(fit_seconds(cfg, config, loaded, features, args.warmup))
    steps = label.steps
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
