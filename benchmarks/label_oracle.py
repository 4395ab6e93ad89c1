"""The oracle check of every readout on real LMs: with each word list's category word as the hand-given label,
the held-out AUROC of each prompt family (forward passes only). The best family per model becomes its default
(conf/prompt/default.yaml: style_by_model).

    python benchmarks/label_oracle.py                                  # smollm2-135m and gemma3-270m, 12 word lists
    python benchmarks/label_oracle.py --models smollm2-135m --families plain label_likelihood --negatives 300
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from gradspace.labeling.config import LabelingConfig
from gradspace.labeling.oracle_gate import check_oracles
from gradspace.labeling.setup import build_discriminator, build_features
from gradspace.models.loading import load_model
from harness import pin_threads, print_header

CONF = Path(__file__).resolve().parents[1] / "conf"


def label_config(model: str, *overrides: str) -> DictConfig:
    """label.py's config for every word list of conf/feature/word_lists.yaml on `model`."""
    names = list(OmegaConf.load(CONF / "feature" / "word_lists.yaml").sets)
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("label", overrides=[f"model={model}", "logger=none", "feature=word_lists",
                                           f"feature.ids=[{','.join(names)}]", *overrides])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["smollm2-135m", "gemma3-270m"])
    parser.add_argument("--families", nargs="+", default=["chat", "plain", "example_likelihood", "label_likelihood"])
    parser.add_argument("--negatives", type=int, default=150, help="held-out inactive words per feature")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    pin_threads(args.threads)
    print_header("oracle check: held-out AUROC with the category word as the label")
    summary = {}
    for model in args.models:
        cfg = label_config(model)
        config = LabelingConfig.from_config(cfg)
        start = time.perf_counter()
        cache_dir = Path(str(cfg.paths.cache_dir)).expanduser()
        loaded = load_model(cfg.model, cache_dir, progress=False)
        print(f"\n{model}: loaded in {time.perf_counter() - start:.1f} s")
        features, _ = build_features(config, cfg.model, loaded, cache_dir)
        for f in features:
            f.heldout_negative = f.heldout_negative[: args.negatives]
        for family in args.families:
            if family == "chat" and not getattr(loaded.tokenizer, "chat_template", None):
                continue
            # The family's readout of one-token labels; any token may be the category word.
            family_config = LabelingConfig.from_config(label_config(model, f"prompt.style={family}", "label.length=1",
                                                                    "label.vocabulary=all"))
            _, discriminator, allowed = build_discriminator(family_config, cfg.model, loaded)
            oracles = check_oracles(family_config, discriminator, allowed, features)
            row = {name: result.score.auroc for name, result in oracles.checks.items()}
            summary[(model, family)] = row
            cells = " ".join(f"{name[:8]}={auroc:.2f}" for name, auroc in row.items())
            print(f"{model:13s} {family:19s} median {statistics.median(row.values()):.3f} "
                  f">=0.9: {sum(a >= 0.9 for a in row.values()):2d}/{len(row)} ({oracles.seconds:.0f} s) | {cells}")
    for model in args.models:
        rows = {family: row for (m, family), row in summary.items() if m == model}
        best = max(rows, key=lambda family: (statistics.median(rows[family].values()), min(rows[family].values())))
        print(f"best readout for {model}: {best} (median held-out oracle AUROC {statistics.median(rows[best].values()):.3f})")


if __name__ == "__main__":
    main()
