import atexit
import os
import shutil
import tempfile

# Nothing in the test suite may reach a hub or prompt for W&B credentials.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests never read or fill the user's model cache: a test that needs a synthetic model pretrains a tiny one.
os.environ["GRADSPACE_CACHE"] = tempfile.mkdtemp(prefix="gradspace-test-cache-")
atexit.register(shutil.rmtree, os.environ["GRADSPACE_CACHE"], ignore_errors=True)

import itertools  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
BLIMP_DIR = REPO_ROOT.parent / "shared" / "data" / "blimp"  # the real BLiMP files, where the checkout has them

TINY_VOCABULARY = (
    "the a dog dogs cat cats bird birds runs run sees see near that . ? yes no is mammal bird fish himself herself"
).split()
TINY_SUITE_TASKS = ("anaphor", "npi", "sva")


def run_benchmark(script: str, *args: str, **env_vars: str) -> str:
    """benchmarks/<script> run as a user runs it (its own process, one thread); its stdout, or the test fails with its
    stderr."""
    env = {**os.environ, **env_vars, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / script), *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def build_tiny_lm(vocabulary=TINY_VOCABULARY, hidden_size: int = 64, seed: int = 0):
    """A random 2-layer GPT-NeoX with a word-level tokenizer: the smallest model the real code paths accept."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from gradspace.synth.tokenizer import build_word_tokenizer

    tokenizer = build_word_tokenizer(list(dict.fromkeys(vocabulary)), model_max_length=64)
    torch.manual_seed(seed)
    config = GPTNeoXConfig(
        hidden_size=hidden_size, num_hidden_layers=2, num_attention_heads=4, intermediate_size=2 * hidden_size,
        vocab_size=len(tokenizer), max_position_embeddings=64, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    return GPTNeoXForCausalLM(config).eval(), tokenizer


def save_model(model, tokenizer, path: Path) -> Path:
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def tiny_lm():
    return build_tiny_lm()


@pytest.fixture
def tiny_model_dir(tmp_path):
    """The tiny model saved like a hub checkpoint (safetensors + tokenizer), for `model=local` runs."""
    return save_model(*build_tiny_lm(), tmp_path / "tiny-neox")


def tiny_suite_pairs() -> dict[str, list[tuple[str, str]]]:
    nouns = [("dog", "dogs"), ("cat", "cats"), ("bird", "birds"), ("horse", "horses")]
    verbs = [("runs", "run"), ("sleeps", "sleep"), ("sings", "sing")]
    pairs = {task: [] for task in TINY_SUITE_TASKS}
    for (sg, pl), (v3, v), adj in itertools.product(nouns, verbs, ["big", "small", "old"]):
        pairs["sva"] += [(f"the {adj} {sg} {v3}", f"the {adj} {sg} {v}"), (f"the {adj} {pl} {v}", f"the {adj} {pl} {v3}")]
        pairs["npi"].append((f"no {adj} {sg} ever {v3}", f"the {adj} {sg} ever {v3}"))
        pairs["anaphor"].append((f"the {adj} {sg} sees itself", f"the {adj} {sg} sees themselves"))
    return pairs


@pytest.fixture(scope="session")
def tiny_suite_dir(tmp_path_factory) -> Path:
    """`model/`: a random tiny GPT-NeoX with a word-level tokenizer; `suite/`: one BLiMP-format jsonl file per task."""
    root = tmp_path_factory.mktemp("tiny-suite")
    (root / "suite").mkdir()
    words = set()
    for task, rows in tiny_suite_pairs().items():
        lines = []
        for index, (good, bad) in enumerate(rows):
            words.update(good.split() + bad.split())
            lines.append(json.dumps({"sentence_good": good, "sentence_bad": bad, "UID": task,
                                     "linguistics_term": f"{task}_group", "pairID": str(index)}))
        (root / "suite" / f"{task}.jsonl").write_text("\n".join(lines) + "\n")
    save_model(*build_tiny_lm(sorted(words), hidden_size=32), root / "model")
    return root


def train_results(**values):
    """A `TrainResults` of a finished FTGD run with neutral values wherever a test does not give one."""
    from gradspace.ftgd.results import TrainResults

    neutral = dict(status="ok", model={"name": "synth-1m", "revision": "main"}, task="t", tasks_trained=["t"],
                   objective="bounded", mask={}, seed=0, steps=1, train_pairs=1, phenomena={}, base_key="key",
                   eval_before={}, eval_after={}, transfer={}, heldout_lm_loss={}, config={}, run={}, resumed_from=None,
                   fit_seconds=None)
    return TrainResults(**{**neutral, **values})


@pytest.fixture(scope="module")
def one_thread():
    # Two threads on a shared CPU spin against each other; one is many times faster for models this small.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
