"""Given labels' training objective, AUROC and balanced accuracy on a word list's training, validation and held-out
words, each split on its own: whether the objective the soft labels minimise prefers the category word to the labels
a run ended on (an optimisation failure if it does), and how noisy a few validation words make the selection.

    python benchmarks/label_objective.py --model gemma3-270m --feature tools --labels tool needle hammer blade friction
    python benchmarks/label_objective.py --model smollm2-135m --feature months --labels month calendar oct hex sex
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hydra import compose, initialize_config_dir

from gradspace.labeling.config import LabelingConfig
from gradspace.labeling.discrete import HardLabelScorer
from gradspace.labeling.oracle import word_label_ids
from gradspace.labeling.setup import build_discriminator, build_features
from gradspace.models.loading import load_model
from harness import pin_threads, print_header

CONF = Path(__file__).resolve().parents[1] / "conf"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--feature", required=True, help="a word list of conf/feature/word_lists.yaml")
    parser.add_argument("--labels", nargs="+", required=True, help="one-token words")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    pin_threads(args.threads)
    print_header(f"label objective by split: {args.model}, {args.feature}")
    with initialize_config_dir(str(CONF), version_base=None):
        cfg = compose("label", overrides=[f"model={args.model}", "feature=word_lists", f"feature.ids=[{args.feature}]", "logger=none"])
    config = LabelingConfig.from_config(cfg)
    cache = Path(str(cfg.paths.cache_dir)).expanduser()
    loaded = load_model(cfg.model, cache, progress=False)
    tokenizer = loaded.tokenizer
    _, discriminator, allowed = build_discriminator(config, cfg.model, loaded)
    (feature,), _ = build_features(config, cfg.model, loaded, cache)
    labels = [word_label_ids(discriminator.builder, word) for word in args.labels]
    for word, ids in zip(args.labels, labels):
        if len(ids) != 1:
            raise SystemExit(f"error: '{word}' is {len(ids)} tokens for {args.model} in the label slot; give one-token words")
    limit = config.discrete.max_examples
    print(f"objective = balanced cross-entropy of the calibrated readout + "
          f"{config.label.kl_weight} x naturalness (-log q of the label); {limit} negatives per split at most")
    for split in ("train", "validation", "heldout"):
        positives, negatives = getattr(feature, f"{split}_positive"), getattr(feature, f"{split}_negative")[:limit]
        scorer = HardLabelScorer(discriminator, positives, negatives, tokenizer.pad_token_id, allowed, config.label.kl_weight)
        print(f"\n{split}: {len(positives)} positive, {len(negatives)} negative words (lowest objective first)")
        print("| label | objective | AUROC | balanced accuracy |\n|---|---|---|---|")
        for score in sorted(scorer.score_labels(labels), key=lambda s: s.objective):
            print(f"| {tokenizer.decode(list(score.label_ids)).strip()} | {score.objective:.3f} | {score.auroc:.3f} | "
                  f"{score.balanced_accuracy:.3f} |")


if __name__ == "__main__":
    main()
