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

from gradspace.labeling.config import LabelingConfig
from gradspace.labeling.discriminator import Discriminator
from gradspace.labeling.features import word_list_features
from gradspace.labeling.oracle import oracle_check
from gradspace.labeling.prompts import PromptBuilder, resolve_prompt_spec
from gradspace.labeling.soft_label import allowed_label_tokens
from gradspace.models.loading import load_model
from harness import pin_threads, print_header

CONF = Path(__file__).resolve().parents[1] / "conf"


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
        with initialize_config_dir(str(CONF), version_base="1.3"):
            cfg = compose("label", overrides=[f"model={model}", "logger=none", "feature=word_lists",
                                              f"feature.ids=[{','.join(compose_ids())}]"])
        config = LabelingConfig.from_config(cfg)
        start = time.perf_counter()
        loaded = load_model(cfg.model, Path(str(cfg.paths.cache_dir)).expanduser(), progress=False)
        print(f"\n{model}: loaded in {time.perf_counter() - start:.1f} s")
        feature = config.feature
        features = word_list_features(feature.sets, feature.labels, [str(i) for i in feature.ids], None, loaded.tokenizer,
                                      feature.heldout_fraction, feature.validation_fraction, feature.split_seed, None)
        for family in args.families:
            if family == "chat" and not getattr(loaded.tokenizer, "chat_template", None):
                continue
            prompt = config.prompt.__class__(style=family, style_by_model={}, add_bos=config.prompt.add_bos,
                                             families=config.prompt.families)
            spec = resolve_prompt_spec(prompt, loaded.tokenizer, "gguf", model)
            builder = PromptBuilder(spec, loaded.tokenizer, 1, add_bos=prompt.add_bos)
            discriminator = Discriminator(loaded.model, builder)
            allowed = allowed_label_tokens(loaded.tokenizer, builder, discriminator.embedding.shape[0], "all")
            start = time.perf_counter()
            row = {}
            for f in features:
                f.heldout_negative = f.heldout_negative[: args.negatives]
                result = oracle_check(discriminator, f, allowed, config.evaluation.max_examples)
                row[f.name] = result.score.auroc
            seconds = time.perf_counter() - start
            summary[(model, family)] = row
            cells = " ".join(f"{name[:8]}={auroc:.2f}" for name, auroc in row.items())
            print(f"{model:13s} {family:19s} median {statistics.median(row.values()):.3f} "
                  f">=0.9: {sum(a >= 0.9 for a in row.values()):2d}/{len(row)} ({seconds:.0f} s) | {cells}")
    for model in args.models:
        rows = {family: row for (m, family), row in summary.items() if m == model}
        best = max(rows, key=lambda family: (statistics.median(rows[family].values()), min(rows[family].values())))
        print(f"best readout for {model}: {best} (median held-out oracle AUROC {statistics.median(rows[best].values()):.3f})")


def compose_ids() -> list[str]:
    from omegaconf import OmegaConf

    return list(OmegaConf.load(CONF / "feature" / "word_lists.yaml").sets)


if __name__ == "__main__":
    main()
