"""Minimal-pair scoring: gradspace's evaluator vs minicons and lm-evaluation-harness, same model, same pairs.

    /work/benchvenv/bin/python benchmarks/bench_scoring.py            # the synth and blimp suites
    /work/benchvenv/bin/python benchmarks/bench_scoring.py --suite blimp --blimp-pairs-per-task 100
    /work/benchvenv/bin/python benchmarks/bench_scoring.py --suite real --model gemma3-270m --real-pairs-per-task 3
    python benchmarks/bench_scoring.py --device cuda                                # on a GPU machine (the default there)

Three setups, each scored from one local Hugging Face model directory:
- synth: the pretrained `synth-1m` model (word-level tokenizer) on the synthetic suite;
- blimp: a small randomly initialised GPT-NeoX with a byte-level BPE tokenizer trained here on the BLiMP
  sentences, on the real BLiMP pairs (the first N pairs of each of the 67 paradigms);
- real (`--model smollm2-135m|gemma3-270m`): the preset's converted model directory, as gradspace resolves it (or,
  where this environment lacks the preset's GGUF package, the conversion in gradspace's cache), on real BLiMP
  pairs; no lm-eval here (minutes per run on a CPU).
The scores of a sentence are all log p(sentence | prefix token) summed over its tokens, the prefix token being
gradspace's (`model.prefix_token`: the BOS of the first two setups, SmolLM2's `<|endoftext|>`, Gemma's `<bos>`):
- gradspace:  `score_pairs` as `evaluate_pairs` calls it (shared-prefix pairs: the tokens both sentences of a pair
  start with run once, both continuations from their cache; margins only). "independent" is the path before it:
  every sentence on its own in length-sorted batches (`shared_prefix=False`);
- minicons:   `IncrementalLMScorer.sequence_score(batch, reduction=sum)`, good and bad sentences of `batch_size`
  pairs per call, the way its BLiMP examples loop, its tokenizer's BOS set to gradspace's prefix token (the token
  ids it feeds are checked against gradspace's);
- lm-eval:    `simple_evaluate` with `blimp_<paradigm>` tasks built from lm_eval_blimp_local.yaml on HFLM.
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
from omegaconf import OmegaConf  # noqa: E402

from gradspace.data.suite import read_pairs_dir  # noqa: E402
from gradspace.errors import GradspaceError  # noqa: E402
from gradspace.evaluation.logprobs import encode_with_prefix, prefix_token_id  # noqa: E402
from gradspace.evaluation.minimal_pairs import score_pairs, shared_prefix_cache_argument  # noqa: E402
from gradspace.models.loading import default_cache_dir, load_model, resolve_pretrained_path  # noqa: E402
from gradspace.pairs import MinimalPair, write_pairs_jsonl  # noqa: E402
from gradspace.utils.cache import COMPLETE_MARKER  # noqa: E402
from harness import Goal, default_device, interleaved_medians, pin_threads, print_header, synchronized  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TASK_TEMPLATE = Path(__file__).with_name("lm_eval_blimp_local.yaml")
REAL_MODELS = ("smollm2-135m", "gemma3-270m")
DEFAULT_BLIMP_DIR = "/work/shared/data/blimp"
ENDOFTEXT, PADDING = "<|endoftext|>", "<|padding|>"


@dataclass
class Setup:
    name: str  # its first word names the setup in the ratio lines
    model_dir: Path
    pairs: list[MinimalPair]
    prefix_token: str | None = None  # gradspace's model.prefix_token; None: its default (here the tokenizer's BOS)
    with_lm_eval: bool = True


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


def real_setup(model_name: str, blimp_dir: str, per_task: int) -> Setup:
    model_cfg = OmegaConf.to_container(OmegaConf.load(REPO / "conf" / "model" / f"{model_name}.yaml"))
    try:
        path = Path(resolve_pretrained_path(model_cfg)[0])
    except GradspaceError as err:  # e.g. the GGUF package is installed in the main environment only
        converted = sorted(marker.parent for marker in (default_cache_dir() / "gguf").glob(f"{model_name}-*/{COMPLETE_MARKER}"))
        if len(converted) != 1:
            raise GradspaceError(f"{err}; or convert {model_name} once from the main environment (python train.py model={model_name} ...)") from None
        path = converted[0]
        print(f"({err.args[0].split(';')[0]}: using its conversion in the cache, {path})")
    pairs = first_per_task(read_pairs_dir(blimp_dir), per_task)
    return Setup(f"{model_name} (converted GGUF, real BLiMP)", path, pairs, prefix_token=model_cfg["prefix_token"], with_lm_eval=False)


def run_gradspace(setup: Setup, batch_size: int, device: str):
    model_cfg = {"name": "bench", "source": "local", "path": str(setup.model_dir), "prefix_token": setup.prefix_token}
    loaded = load_model(model_cfg, device=device, progress=False)
    model, tokenizer, pairs = loaded.model.eval(), loaded.tokenizer, setup.pairs

    def scores(**options) -> ToolResult:
        good, bad = score_pairs(model, tokenizer, pairs, batch_size=batch_size, **options)
        return ToolResult(good.numpy(), bad.numpy(), float("nan"))

    timed = {
        # evaluate_pairs' call: its margins need no shared-prefix log-probabilities
        "gradspace": lambda: scores(include_shared_prefix=False),
        "independent": lambda: scores(shared_prefix=False),
    }

    return model, tokenizer, scores, timed


def run_minicons(model_dir: Path, pairs: list[MinimalPair], batch_size: int, device: str, gradspace_tokenizer):
    """minicons conditioned on gradspace's prefix token: `bos_token=True` prepends the tokenizer's BOS as text, so
    that BOS is set to the prefix token, unless the tokenizer adds the prefix token itself (Gemma's `<bos>`). The
    ids it feeds for the first sentences are compared with gradspace's before anything is timed."""
    from minicons import scorer

    lm = scorer.IncrementalLMScorer(str(model_dir), device=device)
    prefix_id = prefix_token_id(gradspace_tokenizer)
    lm.tokenizer.bos_token = gradspace_tokenizer.convert_ids_to_tokens(prefix_id)
    prepend = lm.tokenizer("x")["input_ids"][:1] != [prefix_id]

    def score(sentences: list[str]) -> list[float]:
        return lm.sequence_score(sentences, reduction=lambda x: x.sum(0).item(), bos_token=prepend)

    fed = []
    hook = lm.model.register_forward_pre_hook(lambda _, args, kwargs: fed.append(kwargs), with_kwargs=True)
    sample = [p.good for p in pairs[:8]]
    score(sample)
    hook.remove()
    ids = [row[mask.bool()].tolist() for row, mask in zip(fed[0]["input_ids"].cpu(), fed[0]["attention_mask"].cpu())]
    if ids != encode_with_prefix(gradspace_tokenizer, sample):
        raise GradspaceError(f"minicons feeds other token ids than gradspace (first: {ids[0]}); check the prefix token")
    print(f"minicons is fed gradspace's token ids, prefix {lm.tokenizer.bos_token!r} (id {prefix_id}, "
          f"{'prepended as BOS text' if prepend else 'added by its tokenizer'}): checked on {len(sample)} sentences")

    def score_all(chosen: list[MinimalPair] | None = None) -> ToolResult:
        """Scores `chosen` (default: the pairs given above)."""
        chosen = pairs if chosen is None else chosen
        good, bad = [], []
        for start in range(0, len(chosen), batch_size):
            chunk = chosen[start : start + batch_size]
            good += score([p.good for p in chunk])
            bad += score([p.bad for p in chunk])
        return ToolResult(np.array(good), np.array(bad), float("nan"))

    return score_all


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


def keeping_result(fn, results: dict, name: str):
    """`fn`, with its latest result kept in `results[name]`: the timed calls give the scores that are compared."""
    def call():
        results[name] = fn()
    return call


def compare(setup: Setup, batch_size: int, repeats: int, device: str) -> list[Goal]:
    label = setup.name.split()[0]
    load = lambda: ", ".join(f"{value:.1f}" for value in os.getloadavg())  # noqa: E731
    print(f"-- {setup.name}: {len(setup.pairs)} pairs, {len({p.task for p in setup.pairs})} tasks, "
          f"model {setup.model_dir}, batch {batch_size} sentences, on {device}; load average at start {load()}")
    model, tokenizer, ours_scores, ours_timed = run_gradspace(setup, batch_size, device)
    cache_argument = shared_prefix_cache_argument(model)
    print(f"gradspace's shared-prefix path: {'used' if cache_argument else 'NOT used'} for {type(model).__name__} "
          f"(cache argument {cache_argument!r})")
    mc_timed = run_minicons(setup.model_dir, setup.pairs, batch_size, device, tokenizer)
    ours_full = ours_scores()  # shared-prefix path with the shared prefix's log-probabilities: whole-sentence scores
    # Throughput: gradspace (shared prefix), gradspace independent and minicons alternate. The synthetic setups warm
    # up with one round first; on a real LM the calls above are the warm-up (another round would take minutes).
    results: dict[str, ToolResult] = {}
    timed = {"gradspace": ours_timed["gradspace"], "independent": ours_timed["independent"], "minicons": mc_timed}
    seconds = interleaved_medians({name: synchronized(keeping_result(fn, results, name), device) for name, fn in timed.items()},
                                  repeats=repeats, warmup=0 if not setup.with_lm_eval else 1)
    ours, independent, mc = results["gradspace"], results["independent"], results["minicons"]
    others = [("minicons", mc)]
    if setup.with_lm_eval:
        with tempfile.TemporaryDirectory(dir=BENCH_DIR) as data_dir:
            lme_run, lme_warm = run_lm_eval(setup.model_dir, setup.pairs, batch_size, Path(data_dir), device)
            lme_warm()
            lme, lme_model_pps, lme_task_acc = lme_run()
        others.append(("lm-eval", lme))

    pps = {name: len(setup.pairs) / value for name, value in seconds.items()}
    margin = lambda result: result.good - result.bad  # noqa: E731
    print(f"independent vs shared prefix (gradspace): max |score difference| "
          f"{np.abs(np.concatenate([independent.good - ours_full.good, independent.bad - ours_full.bad])).max():.2e} nats, "
          f"max |margin difference| {np.abs(margin(independent) - margin(ours)).max():.2e}, "
          f"{int((independent.correct != ours.correct).sum())} of {len(ours.good)} pair outcomes differ")
    for name, result in others:
        diff = np.abs(np.concatenate([result.good - ours_full.good, result.bad - ours_full.bad]))
        print(f"{name:>11} vs gradspace: max |score difference| {diff.max():.2e} nats, max |margin difference| "
              f"{np.abs(margin(result) - margin(ours)).max():.2e}, "
              f"{int((result.correct != ours.correct).sum())} of {len(ours.good)} pair outcomes differ")
    print("accuracy: " + "  ".join(f"{name} {result.correct.mean():.4f}" for name, result in [("gradspace", ours), *others]))
    if setup.with_lm_eval:
        ours_task_acc: dict[str, list[bool]] = defaultdict(list)
        for pair, ok in zip(setup.pairs, ours.correct):
            ours_task_acc[pair.task].append(bool(ok))
        task_gap = max(abs(np.mean(ours_task_acc[t]) - acc) for t, acc in lme_task_acc.items())
        print(f"lm-eval's own acc metric: largest per-task gap to gradspace {task_gap:.4f}")
    print(f"pairs/s: gradspace {pps['gradspace']:.2f}  gradspace independent {pps['independent']:.2f}  "
          f"minicons {pps['minicons']:.2f}" + (f"  lm-eval {lme.pairs_per_second:.2f} end to end ({lme_model_pps:.2f} in "
                                               f"its model calls alone)" if setup.with_lm_eval else ""))
    print(f"shared prefix / independent: {pps['gradspace'] / pps['independent']:.2f}x; "
          f"independent / minicons: {pps['independent'] / pps['minicons']:.2f}x (the path before shared-prefix pairs)")
    goals = [Goal(f"{label} gradspace/minicons pairs/s", pps["gradspace"] / pps["minicons"], 2.0, at_most=False)]
    print(goals[0].line())
    if setup.with_lm_eval:
        print(f"ratio {label} gradspace/lm-eval pairs/s = {pps['gradspace'] / lme.pairs_per_second:.2f}x end to end, "
              f"{pps['gradspace'] / lme_model_pps:.2f}x model calls only (no goal)")
    same = all((result.correct == ours.correct).all() for _, result in [("independent", independent), *others])
    print(f"same accuracies: {'YES' if same else 'NO'}; load average at end {load()}")
    return goals + [Goal(f"{label} identical pair outcomes", float(same), 1.0, at_most=False)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", choices=("synth", "blimp", "both", "real"), default="both",
                        help="both: synth and blimp; real: a converted real LM (--model)")
    parser.add_argument("--model", choices=REAL_MODELS, default=REAL_MODELS[0], help="the real LM of --suite real")
    parser.add_argument("--real-pairs-per-task", type=int, default=3)
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
    if args.suite == "real":
        setups.append(real_setup(args.model, args.blimp_dir, args.real_pairs_per_task))
    goals = [goal for setup in setups for goal in compare(setup, args.batch_size, args.repeats, args.device)]
    print("summary: " + "; ".join(f"{g.name} {'MET' if g.met else 'NOT MET'}" for g in goals))


if __name__ == "__main__":
    main()
