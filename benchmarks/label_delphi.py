"""delphi on both ends, on the real models (gradspace.labeling.delphi_cache, delphi_scoring).

    # 1. the oracle check of the detection readout: with each context feature's category word as the label, does the
    #    per-token readout at a sentence's most label-like token tell the feature's sentences from the same words in
    #    another sense?
    OMP_NUM_THREADS=1 python benchmarks/label_delphi.py oracle
    # 2. the built-in SmolLM2 SAE's codes over the Wikipedia sample written as a delphi latent cache, and 12 latents
    #    picked by the rule of conf/feature/sae_latent.yaml on it
    OMP_NUM_THREADS=1 python benchmarks/label_delphi.py cache --out benchmarks/results/delphi/latents
    # 3. label them from the cache and score as delphi does (the command it prints), once per seed; then the table
    OMP_NUM_THREADS=1 python benchmarks/label_delphi.py table logs/label/multiruns/<time>/*/results.json
    # 4. the labels and baselines of such runs scored again by this version's readouts, on the windows each run drew
    OMP_NUM_THREADS=1 python benchmarks/label_delphi.py rescore logs/label/multiruns/<time>/*/results.json
    # 5. what one-token labels can reach on that scorer: the label fitted on the scorer itself (its detection readout
    #    on the run's training and validation windows), scored on the test windows beside the run's label
    OMP_NUM_THREADS=1 python benchmarks/label_delphi.py ceiling logs/label/multiruns/<time>/0/results.json
    # 6. whether another reading of the scorer, or several words, would serve detection better: the run's labels and
    #    baselines, and the latent's --set-size most frequent top-activating words as one explanation, read by the
    #    per-token readout and by whole-text readouts, on the run's validation and test windows
    OMP_NUM_THREADS=1 python benchmarks/label_delphi.py readouts logs/label/multiruns/<time>/0/results.json
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from gradspace.labeling.config import LabelingConfig
from gradspace.labeling.delphi_scoring import LABEL_KINDS, DelphiScorer, summary
from gradspace.labeling.features import load_corpus, sae_codes
from gradspace.labeling.records import read_records
from gradspace.labeling.results import FeatureLabel, LabelResults
from gradspace.labeling.scorer import SecondModelScorer, build_scorer
from gradspace.labeling.setup import build_features, load_sae, write_delphi_cache
from gradspace.models.loading import load_model
from harness import pin_threads, print_header

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
RECORDS = ROOT / "benchmarks" / "data" / "context_features.jsonl"


def compose_label(*overrides: str):
    with initialize_config_dir(str(CONF), version_base=None):
        return compose("label", overrides=["logger=none", *overrides])


def oracle(args) -> None:
    """Per model and context feature: the detection readout's AUROC with the category word as the label, the
    feature's sentences against the same words in their other sense (the hard negatives of issue 29)."""
    from torchmetrics.functional.classification import binary_auroc

    records = read_records(RECORDS)
    labels = compose_label("experiment=label_context_records").feature.labels
    for model in args.models:
        cfg = compose_label(f"model={model}", "prompt=contextual", f"model@evaluation.scorer_model={model}")
        config = LabelingConfig.from_config(cfg)
        loaded = load_model(cfg.evaluation.scorer_model, Path(str(cfg.paths.cache_dir)).expanduser(), progress=False)
        delphi = DelphiScorer(SecondModelScorer(config, loaded), 0.3)
        aurocs = {}
        for name, words in labels.items():
            mine = [r for r in records if r.feature == name]
            scores = delphi.window_token_readouts([r.text for r in mine], [words[0]])[words[0]]
            aurocs[name] = round(float(binary_auroc(scores, torch.tensor([int(r.activation > 0) for r in mine]))), 3)
        print(f"{model}: detection readout (the per-token readout {delphi.scorer.spec.template!r} at the text's most "
              f"label-like token): oracle AUROC {aurocs}, median {statistics.median(aurocs.values()):.3f}", flush=True)


def cache(args) -> None:
    """The SAE's codes over the corpus (training texts, then held-out ones) as a delphi cache, and the rule's picks."""
    from gradspace.labeling.delphi_cache import WindowRule, read_cache, select_cached_latents, windows_needed

    cfg = compose_label("experiment=label_sae_smollm2", f"delphi.write_cache={args.out}", *args.overrides)
    config = LabelingConfig.from_config(cfg)
    cache_dir = Path(str(cfg.paths.cache_dir)).expanduser()
    start = time.perf_counter()
    loaded = load_model(cfg.model, cache_dir, progress=False)
    corpus = load_corpus(config.feature, cfg.model, cache_dir)
    sae = load_sae(config.sae, loaded, corpus, cache_dir)
    write_delphi_cache(config, loaded, sae, sae_codes(loaded.model, loaded.tokenizer, sae, corpus.train + corpus.heldout))
    written = read_cache(args.out, sae.hook_name)
    vocabulary = max(len(loaded.tokenizer), int(loaded.model.get_input_embeddings().weight.shape[0]))
    feature = compose_label("experiment=label_delphi_smollm2", f"feature.path={args.out}").feature
    picks = select_cached_latents(written, args.count, WindowRule.of(feature), feature.example_ctx_len,
                                  windows_needed(feature), loaded.tokenizer, vocabulary)
    print(f"wrote {written.tokens.shape[0]} x {written.tokens.shape[1]} tokens of {sae.hook_name} to {args.out} in "
          f"{time.perf_counter() - start:.0f} s; the rule picks latents {picks}")
    print(f"the SAE beside it: sae=local sae.path={sae.extra_cfg.get('path', '<paths.cache_dir>/saes/<its folder>')}")


def table(args) -> None:
    """The per-latent table of one or more runs' results.json (one per seed): label, top-activating words, detection
    and fuzzing balanced accuracy of the label and of each baseline, and the summary per seed."""
    runs = [LabelResults.read(Path(p)) for p in args.results]
    short = {"label": "label", "random_other_latent": "random", "most_frequent_top_activating": "frequent",
             "vocabulary_projection": "projection"}
    for kind in ("detection", "fuzz"):
        print(f"\n{kind}: balanced accuracy (AUROC of the label), per seed")
        print("| seed | latent | label | top-activating | " + " | ".join(short[k] for k in LABEL_KINDS) + " | label AUROC | F1 | precision | recall |")
        print("|---" * (8 + len(LABEL_KINDS)) + "|")
        for run in runs:
            for f in run.features:
                d = isinstance(f, FeatureLabel) and f.delphi
                if not d:
                    continue
                scores = d.of(kind)
                fmt = lambda c: "—" if not c or c.balanced_accuracy is None else f"{c.balanced_accuracy:.2f} ({c.label})"  # noqa: E731
                own = scores["label"]
                print(f"| {run.config['seed']} | {d.latent} | {f.label} | {' '.join(list(dict.fromkeys(f.top_activating))[:4])} | "
                      + " | ".join(fmt(scores.get(k)) for k in LABEL_KINDS)
                      + f" | {own.auroc:.2f} | {own.f1:.2f} | {own.precision:.2f} | {own.recall:.2f} |")
        for run in runs:
            s = getattr(run.delphi, kind)
            print(f"seed {run.config['seed']}: mean balanced accuracy {json.dumps({k: None if v is None else round(v, 3) for k, v in s.mean_balanced_accuracy.items()})}, "
                  f"mean AUROC {s.mean_auroc:.3f}, label above every baseline on {s.label_above_every_baseline} of {run.delphi.latents}, "
                  f"above each: {s.label_above_baseline}")


def rescore(args) -> None:
    """The labels and baselines of delphi runs (their results.json) scored again, by this version's readouts, on the
    windows each run drew: per latent the run's detection balanced accuracy beside this one's, then the summary."""
    for path in args.results:
        run = LabelResults.read(Path(path))
        seed = run.config["seed"]
        cfg = OmegaConf.create(run.config)  # the run's models, prompt and windows (its cache, latents and draw)
        config = LabelingConfig.from_config(cfg)
        cache_dir = Path(str(cfg.paths.cache_dir)).expanduser()
        loaded = load_model(cfg.model, cache_dir, progress=False)
        features, _ = build_features(config, cfg.model, loaded, cache_dir)
        delphi = DelphiScorer(build_scorer(config, cache_dir, loaded), config.delphi.fuzz_threshold)
        results = {f.feature: f for f in run.features if isinstance(f, FeatureLabel) and f.delphi}
        rescored = []
        for feature in features:
            result = results.get(feature.name)
            if result is None:
                continue
            before = result.delphi
            start = time.perf_counter()
            result.delphi, _ = delphi.score(feature.windows, {k: v and v.label for k, v in before.detection.items()}, loaded.tokenizer)
            rescored.append(result)
            cells = ", ".join(f"{k} {v.label!r} {before.detection[k].balanced_accuracy:.2f} -> "
                              + ("-" if v.balanced_accuracy is None else f"{v.balanced_accuracy:.2f}")
                              for k, v in result.delphi.detection.items() if v)
            print(f"seed {seed} {feature.name} ({time.perf_counter() - start:.0f} s), detection: {cells}", flush=True)
        scores = summary(rescored)
        for kind in ("detection", "fuzz"):
            s = getattr(scores, kind)
            print(f"seed {seed} {kind}: mean balanced accuracy {json.dumps({k: None if v is None else round(v, 3) for k, v in s.mean_balanced_accuracy.items()})}, "
                  f"label above every baseline on {s.label_above_every_baseline} of {scores.latents}", flush=True)


def ceiling(args) -> None:
    """Per latent of a delphi run: the one-token label of the scorer's own detection readout fitted on the run's
    training and validation windows (the scan of `feature.fit_on=windows`, with the scorer as the reader), at
    naturalness weights 0 and the run's label.kl_weight, scored on the test windows at the validation windows'
    boundary; beside the run's label and the most frequent top-activating token. A label the optimiser finds cannot
    be expected to do better on the scorer than one fitted on the scorer itself."""
    from gradspace.labeling.delphi_scoring import classifier_metrics
    from gradspace.labeling.scan import vocabulary_scan
    from gradspace.labeling.soft_label import allowed_label_tokens
    from gradspace.labeling.window_readout import WindowLabelScorer, window_tables

    run = LabelResults.read(Path(args.results))
    cfg = OmegaConf.create(run.config)
    config = LabelingConfig.from_config(cfg)
    cache_dir = Path(str(cfg.paths.cache_dir)).expanduser()
    loaded = load_model(cfg.model, cache_dir, progress=False)
    features, _ = build_features(config, cfg.model, loaded, cache_dir)
    delphi = DelphiScorer(build_scorer(config, cache_dir, loaded), config.delphi.fuzz_threshold)
    reader, tokenizer = delphi.scorer.discriminator(1), delphi.tokenizer
    allowed = allowed_label_tokens(tokenizer, reader.builder, reader.embedding.shape[0], config.label.vocabulary,
                                   config.label.min_letters, config.label.stop_words)
    results = {f.feature: f for f in run.features if isinstance(f, FeatureLabel) and f.delphi}
    weights = dict.fromkeys([0.0, config.label.kl_weight])
    means: dict[str, list[float]] = {**{f"scorer_fit_kl{w}": [] for w in weights}, "label": [], "most_frequent_top_activating": []}
    for feature in features:
        result = results.get(feature.name)
        if result is None:
            continue
        start = time.perf_counter()
        def respelled(windows) -> list[list[int]]:  # as detection reads them: the text, in the scorer's tokens
            return [tokenizer.encode(loaded.tokenizer.decode(w.tokens, skip_special_tokens=True).strip(), add_special_tokens=False)
                    for w in windows]

        windows = {part: (respelled(feature.windows.activating[part]), respelled(feature.windows.non_activating[part]))
                   for part in ("train", "validation", "test")}
        # the scorer's readout where the fitted label is set and scored; the scan below reads train and validation
        tables = {part: window_tables(reader, pos + neg, allowed)[0] for part, (pos, neg) in windows.items() if part != "train"}
        targets = {part: torch.tensor([1] * len(pos) + [0] * len(neg)) for part, (pos, neg) in windows.items()}
        cells = []
        for weight in weights:
            fitted = WindowLabelScorer(reader, windows["train"][0] + windows["validation"][0],
                                       windows["train"][1] + windows["validation"][1], allowed, weight)
            token = vocabulary_scan(fitted).label_ids[0]
            scores = classifier_metrics(tables["validation"][:, token], targets["validation"], tables["test"][:, token],
                                        targets["test"])
            means[f"scorer_fit_kl{weight}"].append(scores["balanced_accuracy"])
            cells.append(f"fitted on the scorer (kl {weight}) {tokenizer.decode([token]).strip()!r} "
                         f"{scores['balanced_accuracy']:.2f}")
        for kind in ("label", "most_frequent_top_activating"):
            scored = result.delphi.detection[kind]
            means[kind].append(scored.balanced_accuracy)
            cells.append(f"{kind} {scored.label!r} {scored.balanced_accuracy:.2f}")
        print(f"{feature.name} ({time.perf_counter() - start:.0f} s), detection balanced accuracy: {', '.join(cells)}", flush=True)
    print(f"seed {run.config['seed']}: mean detection balanced accuracy "
          + json.dumps({k: round(statistics.mean(v), 3) for k, v in means.items() if v}))


TEXT_READOUTS = {"about": "{context}{word}\n\nThis text is about {label}",
                 "mentions": "{context}{word}\n\nThis text mentions {label}"}


def readouts(args) -> None:
    """Detection balanced accuracy of each label of a delphi run, and of the latent's --set-size most frequent
    top-activating words as one explanation, under three readings of the scorer, on the run's windows (boundary on
    validation, scored on test):
    - token: the run's detection readout (`window_readout`), the max over the window's tokens of log q(label); a set
      of words reads log q(any of them), the logsumexp of its words' log q at each token;
    - about, mentions: the whole window, then "This text is about <label>" (or "mentions"): log q(label) (a set: the
      logsumexp over its words). Both pass the oracle check (printed first, as `oracle` prints the token readout's).
    Words the scorer spells in several tokens are read by their first token in a set."""
    from torchmetrics.functional.classification import binary_auroc

    from gradspace.labeling.delphi_scoring import classifier_metrics
    from gradspace.labeling.discrete import HardLabelScorer
    from gradspace.labeling.discriminator import Discriminator
    from gradspace.labeling.oracle import word_label_ids
    from gradspace.labeling.prompts import Example, PromptBuilder, PromptSpec
    from gradspace.labeling.window_readout import token_logits

    run = LabelResults.read(Path(args.results))
    cfg = OmegaConf.create(run.config)
    config = LabelingConfig.from_config(cfg)
    cache_dir = Path(str(cfg.paths.cache_dir)).expanduser()
    loaded = load_model(cfg.model, cache_dir, progress=False)
    delphi = DelphiScorer(build_scorer(config, cache_dir, loaded), config.delphi.fuzz_threshold)
    tokenizer, model, pad = delphi.tokenizer, delphi.scorer.loaded.model, delphi.tokenizer.pad_token_id
    token_reader = delphi.scorer.discriminator(1)
    text_readers = {name: Discriminator(model, PromptBuilder(PromptSpec(name, template, None, readout="label_likelihood"),
                                                             tokenizer, 1, add_bos=config.prompt.add_bos)).to(model.device)
                    for name, template in TEXT_READOUTS.items()}

    def scorer_tokens(texts: list[str]) -> list[list[int]]:  # as detection reads them, in the scorer's tokens
        return [tokenizer.encode(text, add_special_tokens=False) for text in texts]

    def text_table(reader: Discriminator, windows: list[list[int]]) -> torch.Tensor:  # [n, V] log q at the label slot
        # the whole text: its last token the word, the rest its context
        examples = [Example(ids[-1], tuple(ids[:-1]), tokenizer.decode([ids[-1]])) for ids in (w or [pad] for w in windows)]
        return HardLabelScorer(reader, examples, [], pad, delphi.scorer.allowed).label_free_log_q()[0].double().cpu()

    records = read_records(RECORDS)
    words = compose_label("experiment=label_context_records").feature.labels
    for name, reader in text_readers.items():
        aurocs = {}
        for feature, labels in words.items():
            mine = [r for r in records if r.feature == feature]
            ids = word_label_ids(reader.builder, labels[0])
            if len(ids) == 1:  # a category word the scorer spells in one token
                table = text_table(reader, scorer_tokens([r.text for r in mine]))
                aurocs[feature] = round(float(binary_auroc(table[:, ids[0]], torch.tensor([int(r.activation > 0) for r in mine]))), 3)
        print(f"oracle check of the {name!r} readout {TEXT_READOUTS[name]!r}: AUROC {aurocs}, median "
              f"{statistics.median(aurocs.values()) if aurocs else None}", flush=True)

    features, _ = build_features(config, cfg.model, loaded, cache_dir)
    results = {f.feature: f for f in run.features if isinstance(f, FeatureLabel) and f.delphi}
    means: dict[str, list[float]] = {}
    for feature in features:
        result = results.get(feature.name)
        if result is None:
            continue
        start = time.perf_counter()
        labels = {kind: scored.label for kind, scored in result.delphi.detection.items() if scored and scored.label}
        strongest = [w.strip() for w in result.top_activating if w.strip()]  # the strongest windows' tokens
        frequent = sorted(dict.fromkeys(strongest), key=strongest.count, reverse=True)  # ties: the stronger first
        spelled = [ids[0] for ids in (tokenizer.encode(" " + w, add_special_tokens=False) for w in frequent) if ids]
        word_set = list(dict.fromkeys(spelled))[: args.set_size]
        set_name = f"frequent_{len(word_set)}_words " + "/".join(tokenizer.decode([t]).strip() for t in word_set)
        parts = {}
        for part in ("validation", "test"):
            windows = feature.windows.activating[part] + feature.windows.non_activating[part]
            parts[part] = ([loaded.tokenizer.decode(w.tokens, skip_special_tokens=True).strip() for w in windows],
                           torch.tensor([int(w.activating) for w in windows]))
        scores: dict[str, dict[str, dict[str, torch.Tensor]]] = {}  # readout -> label kind -> part -> [n]
        for part, (texts, _) in parts.items():
            windows = scorer_tokens(texts)
            # one pass of the scorer per window: every one-token label and the set read from its tokens' log q (a
            # one-token label's score is `window_tables`' max over the tokens); longer labels by the run's own path
            spelled_labels = {kind: word_label_ids(token_reader.builder, label) for kind, label in labels.items()}
            one_token = {kind: ids[0] for kind, ids in spelled_labels.items() if len(ids) == 1}
            columns = torch.tensor(list(one_token.values()), dtype=torch.long)
            read = []  # per window: each one-token label's max over the tokens, then the set's
            for ids in windows:
                log_q = torch.log_softmax(token_logits(token_reader, ids), -1)
                read.append(torch.cat([log_q[:, columns].amax(0), torch.logsumexp(log_q[:, word_set], -1).amax(0, keepdim=True)]))
            read = torch.stack(read).double().cpu()
            longer = delphi.window_token_readouts(texts, [labels[k] for k, ids in spelled_labels.items() if len(ids) > 1])
            token_scores = {**{kind: read[:, i] for i, kind in enumerate(one_token)},
                            **{kind: longer[labels[kind]] for kind, ids in spelled_labels.items() if len(ids) > 1},
                            set_name: read[:, -1]}
            for kind, values in token_scores.items():
                scores.setdefault("token", {}).setdefault(kind, {})[part] = values
            for name, reader in text_readers.items():
                table = text_table(reader, windows)
                for kind, label in labels.items():
                    ids = word_label_ids(reader.builder, label)
                    if len(ids) == 1:
                        scores.setdefault(name, {}).setdefault(kind, {})[part] = table[:, ids[0]]
                scores.setdefault(name, {}).setdefault(set_name, {})[part] = torch.logsumexp(table[:, word_set], -1)
        cells = []
        for readout, by_label in scores.items():
            for kind, values in by_label.items():
                metrics = classifier_metrics(values["validation"], parts["validation"][1], values["test"], parts["test"][1])
                key = f"{readout}/{'frequent_words' if kind == set_name else kind}"
                means.setdefault(key, []).append(metrics["balanced_accuracy"])
                cells.append(f"{key} {metrics['balanced_accuracy']:.2f}")
        print(f"{feature.name} ({time.perf_counter() - start:.0f} s) labels {labels}, {set_name}: {', '.join(cells)}", flush=True)
    print(f"seed {run.config['seed']}: mean detection balanced accuracy per readout/label "
          + json.dumps({k: round(statistics.mean(v), 3) for k, v in means.items()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("oracle")
    check.add_argument("--models", nargs="+", default=["gemma3-270m", "smollm2-135m"])
    write = commands.add_parser("cache")
    write.add_argument("--out", type=Path, required=True)
    write.add_argument("--count", type=int, default=12)
    write.add_argument("overrides", nargs="*")
    summary = commands.add_parser("table")
    summary.add_argument("results", nargs="+")
    again = commands.add_parser("rescore")
    again.add_argument("results", nargs="+")
    bound = commands.add_parser("ceiling")
    bound.add_argument("results")
    read = commands.add_parser("readouts")
    read.add_argument("results")
    read.add_argument("--set-size", type=int, default=3)
    args = parser.parse_args()
    pin_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    print_header(f"delphi: {args.command}")
    {"oracle": oracle, "cache": cache, "table": table, "rescore": rescore, "ceiling": ceiling, "readouts": readouts}[args.command](args)


if __name__ == "__main__":
    main()
