"""Every live latent of the built-in 2,048-latent SAE of SmolLM2 (conf/experiment/label_sae_smollm2.yaml) labelled by
the exact scan of the word-alone readout (gradspace.labeling.whole_sae), with its time and peak memory: the model, the
SAE (trained and cached by the first run) and its codes over the corpus, the token table, and the labels. Writes
<out>/whole_sae.json and <out>/whole_sae.tsv (latent, density, top words, label, held-out AUROC, word-alone AUROC,
baselines).

    MALLOC_MMAP_THRESHOLD_=131072 OMP_NUM_THREADS=1 python benchmarks/label_whole_sae.py --out benchmarks/results/whole_sae

MALLOC_MMAP_THRESHOLD_ fixes glibc's threshold for allocating with mmap: by default it rises after large frees, and
the forwards' activations, whose shapes vary from batch to batch, then stay in the heap once freed (about a gigabyte
of resident memory that holds no data by the end of the codes); fixed at 128 KiB, they go back to the system.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import statistics
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

from gradspace.labeling.config import LabelingConfig
from gradspace.labeling.features import load_corpus, sae_codes
from gradspace.labeling.setup import build_discriminator, load_sae
from gradspace.labeling.whole_sae import label_all_latents
from gradspace.models.loading import load_model
from harness import Goal, pin_threads, print_header

CONF = Path(__file__).resolve().parents[1] / "conf"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("overrides", nargs="*", help="label.py overrides, e.g. sae.d_sae=512")
    args = parser.parse_args()
    pin_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    print_header("every live latent of an SAE, labelled by the exact scan")
    with initialize_config_dir(str(CONF), version_base=None):
        # The word-alone readout (prompt=default): its table has one row per distinct token, shared by every latent.
        cfg = compose("label", overrides=["experiment=label_sae_smollm2", "prompt=default", "logger=none", *args.overrides])
    config = LabelingConfig.from_config(cfg)
    cache = Path(str(cfg.paths.cache_dir)).expanduser()
    start = time.perf_counter()
    loaded = load_model(cfg.model, cache, progress=False)
    _, discriminator, allowed = build_discriminator(config, cfg.model, loaded)
    corpus = load_corpus(config.feature, cfg.model, cache)
    sae = load_sae(config.sae, loaded, corpus, cache)
    train = sae_codes(loaded.model, loaded.tokenizer, sae, corpus.train)
    heldout = sae_codes(loaded.model, loaded.tokenizer, sae, corpus.heldout)
    codes_seconds = time.perf_counter() - start
    logging.info("model, SAE and codes of %d + %d texts: %.0f s", len(corpus.train), len(corpus.heldout), codes_seconds)
    labels, timings = label_all_latents(discriminator, allowed, train, heldout, sae.W_dec.detach(),
                                        loaded.model.get_output_embeddings().weight.detach(), config.label.kl_weight,
                                        config.feature.threshold)
    peak_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    seconds = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {"model": loaded.name, "sae": {"hook_name": sae.hook_name, "d_sae": sae.d_sae, "architecture": sae.architecture},
               "prompt": discriminator.builder.spec.template, "live_latents": len(labels), "model_sae_codes_seconds": codes_seconds,
               **timings, "seconds": seconds, "peak_rss_bytes": peak_bytes, "latents": [label.as_dict() for label in labels]}
    (args.out / "whole_sae.json").write_text(json.dumps(summary, indent=1))
    rows = ["latent\tdensity\ttop_words\tlabel\theldout_auroc\tword_alone_auroc\tmost_frequent\tmost_frequent_auroc\tprojection\tprojection_auroc"]
    fmt = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
    for label in labels:
        frequent = label.baselines["most_frequent_top_activating"] or {"label": "", "heldout_auroc": None}
        projection = label.baselines["vocabulary_projection"]
        rows.append(f"{label.latent}\t{label.density:.5f}\t{' '.join(label.top_words)}\t{label.label}\t{fmt(label.heldout_auroc)}\t"
                    f"{fmt(label.word_alone_auroc)}\t{frequent['label']}\t{fmt(frequent['heldout_auroc'])}\t{projection['label']}\t"
                    f"{fmt(projection['heldout_auroc'])}")
    (args.out / "whole_sae.tsv").write_text("\n".join(rows) + "\n")
    scored = [label for label in labels if label.heldout_auroc is not None]
    beats = lambda kind: sum(1 for l in scored if l.baselines[kind] and l.baselines[kind]["heldout_auroc"] is not None  # noqa: E731,E741
                             and l.heldout_auroc > l.baselines[kind]["heldout_auroc"])
    print(f"{len(labels)} live latents of {sae.d_sae} labelled; model + SAE + codes {codes_seconds:.0f} s, token table "
          f"{timings['table_seconds']:.0f} s ({timings['table_rows']} training tokens), labels and held-out scores "
          f"{timings['label_seconds']:.0f} s ({timings['heldout_table_rows']} held-out tokens the training texts lack); "
          f"peak RSS {peak_bytes / 1e9:.2f} GB ({peak_bytes / 2**30:.2f} GiB)")
    print(f"held-out AUROC median {statistics.median(latent.heldout_auroc for latent in scored):.3f} over {len(scored)} latents with held-out "
          f"firings; above the most frequent top-activating token on {beats('most_frequent_top_activating')}, above the "
          f"vocabulary projection on {beats('vocabulary_projection')}")
    print(f"word-alone AUROC (the token's firing rate) median {statistics.median(latent.word_alone_auroc for latent in scored):.3f}")
    print(Goal("the whole run (model, SAE codes, table, labels) / 1 h", seconds / 3600, 1.0, True).line())
    print(Goal("peak memory / 4 GB (4e9 bytes)", peak_bytes / 4e9, 1.0, True).line())
    print(f"wrote {args.out / 'whole_sae.tsv'} and whole_sae.json")


if __name__ == "__main__":
    main()
