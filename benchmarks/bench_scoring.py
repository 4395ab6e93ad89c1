"""Minimal-pair scoring: gradspace's evaluator vs minicons and lm-evaluation-harness, same model, same pairs.

    /work/benchvenv/bin/python benchmarks/bench_scoring.py            # both suites
    /work/benchvenv/bin/python benchmarks/bench_scoring.py --suite blimp --blimp-pairs-per-task 100
    python benchmarks/bench_scoring.py --device cuda                                # on a GPU machine (the default there)

Two setups, each scored by all three tools from one local Hugging Face model directory:
- synth: the pretrained `synth-1m` model (word-level tokenizer) on the synthetic suite;
- blimp: a small randomly initialised GPT-NeoX with a byte-level BPE tokenizer trained here on the BLiMP
  sentences, on the real BLiMP pairs (the first N pairs of each of the 67 paradigms).
The three scores of a sentence are all log p(sentence | BOS) summed over its tokens:
- gradspace: `evaluate_pairs` (length-sorted batches, one gather per batch);
- minicons:  `IncrementalLMScorer.sequence_score(batch, reduction=sum, bos_token=True)`, good and bad sentences
  of `batch_size` pairs per call, the way its BLiMP examples loop;
- lm-eval:   `simple_evaluate` with `blimp_<paradigm>` tasks built from lm_eval_blimp_local.yaml on HFLM.
Accuracies must agree; the ratio is pairs/second of gradspace over each other tool. Goal: >= 2x minicons.
Needs minicons and lm-eval (`pip install -e '.[bench]'`), which the main environment does not carry.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

# Everything is local: no hub calls, and lm-eval's dataset cache stays out of the user's home.
BENCH_DIR = Path(os.environ.get("GRADSPACE_BENCH_DIR", Path(tempfile.gettempdir()) / "gradspace-bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_CACHE", str(BENCH_DIR / "hf-datasets"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from harness import Goal, default_device, interleaved_medians, pin_threads, print_header, synchronized  # noqa: E402

from gradspace.pairs import MinimalPair, write_pairs_jsonl  # noqa: E402
from gradspace.data.suite import read_pairs_dir  # noqa: E402
from gradspace.errors import GradspaceError  # noqa: E402
from gradspace.evaluation.logprobs import encode_with_prefix, pad_sequences, pad_token_id  # noqa: E402
from gradspace.evaluation.minimal_pairs import evaluate_pairs, score_sentences  # noqa: E402
from gradspace.models.loading import default_cache_dir, load_model  # noqa: E402

TASK_TEMPLATE = Path(__file__).with_name("lm_eval_blimp_local.yaml")
DEFAULT_BLIMP_DIR = "/work/shared/data/blimp"
ENDOFTEXT, PADDING = "<|endoftext|>", "<|padding|>"


@dataclass
class Setup:
    name: str
    model_dir: Path
    pairs: list[MinimalPair]


@dataclass
class ToolResult:
    good: np.ndarray  # summed log-probability of each good sentence, pair order
    bad: np.ndarray
    pairs_per_second: float

    @property
    def correct(self) -> np.ndarray:
        return self.good > self.bad


def first_per_task(pairs: list[MinimalPair], per_task: int) -> list[MinimalPair]:
    taken: dict[str, int] = defaultdict(int)
    chosen = []
    for pair in pairs:
        if taken[pair.task] < per_task:
            taken[pair.task] += 1
            chosen.append(pair)
    return chosen


def synth_setup(per_task: int) -> Setup:
    from gradspace.synth.pretrain import PretrainConfig, ensure_synth_model
    from gradspace.synth.world import WorldConfig, load_or_build_world

    cache = default_cache_dir()
    root = ensure_synth_model("synth-1m", WorldConfig(), PretrainConfig(), cache, progress=True)
    pairs = first_per_task(load_or_build_world(WorldConfig(), cache).pairs, per_task)
    return Setup("synth (synth-1m, synthetic suite)", root / "main", pairs)


def train_bpe_tokenizer(sentences: list[str], vocab_size: int):
    """Byte-level BPE with Pythia's special tokens. A prefix space on the first word makes "The ..." and
    " The ..." (lm-eval puts its target delimiter " " before every choice) the same tokens, so all three tools
    score identical token sequences."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[ENDOFTEXT, PADDING],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    backend.train_from_iterator(sentences, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=ENDOFTEXT, eos_token=ENDOFTEXT, pad_token=PADDING)


def blimp_setup(blimp_dir: str, per_task: int, vocab_size: int) -> Setup:
    """A random GPT-NeoX (seed 0) and a BPE tokenizer trained on every BLiMP sentence, saved once under BENCH_DIR."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    all_pairs = read_pairs_dir(blimp_dir)
    model_dir = BENCH_DIR / f"blimp-neox-bpe{vocab_size}"
    if not (model_dir / "config.json").is_file():
        tokenizer = train_bpe_tokenizer([s for pair in all_pairs for s in (pair.good, pair.bad)], vocab_size)
        torch.manual_seed(0)
        config = GPTNeoXConfig(
            vocab_size=len(tokenizer), hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
            intermediate_size=512, max_position_embeddings=128, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
        )
        model = GPTNeoXForCausalLM(config)
        partial = Path(tempfile.mkdtemp(dir=BENCH_DIR, prefix=".blimp-neox."))
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        os.replace(partial, model_dir)
    return Setup(f"blimp (random GPT-NeoX, BPE {vocab_size}, real BLiMP)", model_dir, first_per_task(all_pairs, per_task))


def run_gradspace(model_dir: Path, pairs: list[MinimalPair], batch_size: int, device: str):
    loaded = load_model({"name": "bench", "source": "local", "path": str(model_dir)}, device=device, progress=False)
    model, tokenizer = loaded.model, loaded.tokenizer

    def scores() -> ToolResult:
        sentences = [p.good for p in pairs] + [p.bad for p in pairs]
        values = score_sentences(model.eval(), tokenizer, sentences, batch_size=batch_size).numpy()
        return ToolResult(values[: len(pairs)], values[len(pairs):], float("nan"))

    def timed() -> None:
        evaluate_pairs(model, tokenizer, pairs, batch_size=batch_size)

    # The forward passes alone over the same length-sorted batches, tokenized and padded beforehand: the time any
    # scorer that runs these passes needs at least, so minicons' time over it bounds every possible speedup.
    encoded = encode_with_prefix(tokenizer, [p.good for p in pairs] + [p.bad for p in pairs])
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]), reverse=True)
    batches = [pad_sequences([encoded[i] for i in order[start : start + batch_size]], pad_token_id(tokenizer)).to(device)
               for start in range(0, len(order), batch_size)]

    @torch.no_grad()
    def forward_only() -> None:
        for batch in batches:
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)

    return scores, timed, forward_only


def run_minicons(model_dir: Path, pairs: list[MinimalPair], batch_size: int, device: str):
    from minicons import scorer

    lm = scorer.IncrementalLMScorer(str(model_dir), device=device)

    def score_all() -> tuple[np.ndarray, np.ndarray]:
        good, bad = [], []
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            good += lm.sequence_score([p.good for p in chunk], reduction=lambda x: x.sum(0).item(), bos_token=True)
            bad += lm.sequence_score([p.bad for p in chunk], reduction=lambda x: x.sum(0).item(), bos_token=True)
        return np.array(good), np.array(bad)

    def scores() -> ToolResult:
        good, bad = score_all()
        return ToolResult(good, bad, float("nan"))

    return scores, score_all


def lm_eval_task_configs(pairs: list[MinimalPair], data_dir: Path) -> list[dict]:
    """One `blimp_<task>` config per task, from the YAML template, each reading its own jsonl file."""
    template = yaml.safe_load(TASK_TEMPLATE.read_text(encoding="utf-8"))
    by_task: dict[str, list[MinimalPair]] = defaultdict(list)
    for pair in pairs:
        by_task[pair.task].append(pair)
    configs = []
    for task, task_pairs in by_task.items():
        path = write_pairs_jsonl(data_dir / f"{task}.jsonl", task_pairs)
        config = json.loads(json.dumps(template))
        config["task"] = f"blimp_{task}"
        config["dataset_kwargs"]["data_files"] = {"train": str(path)}
        configs.append(config)
    return configs


def run_lm_eval(model_dir: Path, pairs: list[MinimalPair], batch_size: int, data_dir: Path, device: str):
    """End-to-end pairs/s of simple_evaluate, and pairs/s of its model calls alone (dataset loading excluded)."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=str(model_dir), batch_size=batch_size, device=device, dtype="float32")
    model_seconds = [0.0]
    loglikelihood = lm.loglikelihood

    def timed_loglikelihood(requests, disable_tqdm: bool = False):
        start = time.perf_counter()
        try:
            return loglikelihood(requests, disable_tqdm=True)
        finally:
            model_seconds[0] += time.perf_counter() - start

    lm.loglikelihood = timed_loglikelihood
    configs = lm_eval_task_configs(pairs, data_dir)
    order = {(p.task, p.good, p.bad): i for i, p in enumerate(pairs)}

    def evaluate(task_configs: list[dict], limit: int | None = None) -> dict:
        # lm-eval draws a progress bar per task while building requests; they would bury the result lines.
        with contextlib.redirect_stderr(io.StringIO()):
            return lm_eval.simple_evaluate(model=lm, tasks=task_configs, limit=limit, log_samples=True,
                                           verbosity="ERROR", bootstrap_iters=0)

    def run() -> tuple[ToolResult, float, dict[str, float]]:
        model_seconds[0] = 0.0
        start = time.perf_counter()
        out = evaluate(configs)
        total = time.perf_counter() - start
        good, bad = np.full(len(pairs), np.nan), np.full(len(pairs), np.nan)
        for task_name, samples in out["samples"].items():
            task = task_name.removeprefix("blimp_")
            for sample in samples:
                doc = sample["doc"]
                index = order[(task, doc["sentence_good"], doc["sentence_bad"])]
                (good[index], _), (bad[index], _) = sample["filtered_resps"]
        if np.isnan(good).any() or np.isnan(bad).any():
            raise GradspaceError("lm-eval returned no score for some pairs; check the task YAML and data files")
        accuracies = {name.removeprefix("blimp_"): float(res["acc,none"]) for name, res in out["results"].items()}
        return ToolResult(good, bad, len(pairs) / total), len(pairs) / model_seconds[0], accuracies

    warm = lambda: evaluate(configs[:1], limit=8)  # noqa: E731  (first-call imports and setup)
    return run, warm


def compare(setup: Setup, batch_size: int, repeats: int, device: str) -> list[Goal]:
    print(f"-- {setup.name}: {len(setup.pairs)} pairs, {len({p.task for p in setup.pairs})} tasks, "
          f"model {setup.model_dir}, batch {batch_size} sentences, on {device}")
    ours_scores, ours_timed, forward_only = run_gradspace(setup.model_dir, setup.pairs, batch_size, device)
    mc_scores, mc_timed = run_minicons(setup.model_dir, setup.pairs, batch_size, device)
    with tempfile.TemporaryDirectory(dir=BENCH_DIR) as data_dir:
        lme_run, lme_warm = run_lm_eval(setup.model_dir, setup.pairs, batch_size, Path(data_dir), device)
        ours, mc = ours_scores(), mc_scores()
        # Throughput: gradspace and minicons alternate (warm-up first), then one full lm-eval run.
        timed = {"gradspace": ours_timed, "minicons": mc_timed, "forward": forward_only}
        seconds = interleaved_medians({name: synchronized(fn, device) for name, fn in timed.items()}, repeats=repeats)
        lme_warm()
        lme, lme_model_pps, lme_task_acc = lme_run()

    ours_pps, mc_pps = len(setup.pairs) / seconds["gradspace"], len(setup.pairs) / seconds["minicons"]
    for name, result in (("minicons", mc), ("lm-eval", lme)):
        diff = np.abs(np.concatenate([result.good - ours.good, result.bad - ours.bad]))
        disagree = int((result.correct != ours.correct).sum())
        print(f"{name:>9} vs gradspace: max |score difference| {diff.max():.2e} nats, "
              f"{disagree} of {len(ours.good)} pair outcomes differ")
    ours_task_acc: dict[str, list[bool]] = defaultdict(list)
    for pair, ok in zip(setup.pairs, ours.correct):
        ours_task_acc[pair.task].append(bool(ok))
    task_gap = max(abs(np.mean(ours_task_acc[t]) - acc) for t, acc in lme_task_acc.items())
    print(f"accuracy: gradspace {ours.correct.mean():.4f}  minicons {mc.correct.mean():.4f}  "
          f"lm-eval {lme.correct.mean():.4f} (its own acc metric, largest per-task gap to gradspace {task_gap:.4f})")
    print(f"pairs/s: gradspace {ours_pps:.0f}  minicons {mc_pps:.0f}  lm-eval {lme.pairs_per_second:.0f} "
          f"end to end ({lme_model_pps:.0f} in its model calls alone)")
    print(f"model forward passes alone: {len(setup.pairs) / seconds['forward']:.0f} pairs/s, "
          f"{100 * seconds['forward'] / seconds['gradspace']:.0f}% of gradspace's time; no scorer running them can be "
          f"faster than minicons by more than {seconds['minicons'] / seconds['forward']:.2f}x")
    goals = [
        Goal(f"{setup.name.split()[0]} gradspace/minicons pairs/s", ours_pps / mc_pps, 2.0, at_most=False),
    ]
    print(goals[0].line())
    print(f"ratio {setup.name.split()[0]} gradspace/lm-eval pairs/s = {ours_pps / lme.pairs_per_second:.2f}x end to end, "
          f"{ours_pps / lme_model_pps:.2f}x model calls only (no goal)")
    same = (mc.correct == ours.correct).all() and (lme.correct == ours.correct).all()
    print(f"same accuracies: {'YES' if same else 'NO'}")
    return goals + [Goal(f"{setup.name.split()[0]} identical pair outcomes", float(same), 1.0, at_most=False)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", choices=("synth", "blimp", "both"), default="both")
    parser.add_argument("--synth-pairs-per-task", type=int, default=150)
    parser.add_argument("--blimp-pairs-per-task", type=int, default=40)
    parser.add_argument("--blimp-dir", default=DEFAULT_BLIMP_DIR)
    parser.add_argument("--bpe-vocab-size", type=int, default=4096)
    parser.add_argument("--batch-size", type=int, default=64, help="sentences per forward pass, all tools")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default=default_device(), help="cpu or cuda, the same for all tools")
    args = parser.parse_args()

    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    pin_threads(args.threads)
    print_header("minimal-pair scoring: gradspace vs minicons vs lm-evaluation-harness")
    setups = []
    if args.suite in ("synth", "both"):
        setups.append(synth_setup(args.synth_pairs_per_task))
    if args.suite in ("blimp", "both"):
        setups.append(blimp_setup(args.blimp_dir, args.blimp_pairs_per_task, args.bpe_vocab_size))
    goals = [goal for setup in setups for goal in compare(setup, args.batch_size, args.repeats, args.device)]
    print("summary: " + "; ".join(f"{g.name} {'MET' if g.met else 'NOT MET'}" for g in goals))


if __name__ == "__main__":
    main()
