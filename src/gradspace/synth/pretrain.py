"""CPU pretraining of small GPT-NeoX models on the synthetic world, saved with Pythia-like checkpoints.

A model root holds one `save_pretrained` directory per checkpoint (`step0`, `step50`, ..., and `main` = the final
step, the revision names Pythia uses on the hub) with the tokenizer beside the weights, so every checkpoint loads
with `AutoModelForCausalLM.from_pretrained(root / revision)`. `checkpoints.json` lists the revisions with their
losses and both configs. `ensure_synth_model` trains once per (name, configs) into a cache and reuses it after.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import torch
from tqdm.auto import tqdm
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerFast
from transformers.utils import logging as transformers_logging

from gradspace.errors import GradspaceError
from gradspace.synth.tokenizer import build_word_tokenizer
from gradspace.synth.world import SynthWorld, WorldConfig, load_or_build_world
from gradspace.utils.cache import build_once
from gradspace.utils.io import atomic_write_json

CHECKPOINTS_FILE = "checkpoints.json"
FINAL_REVISION = "main"
# Bump when the saved layout or the training procedure changes, so old caches are not mistaken for new ones.
CACHE_FORMAT = 1
# The cosine schedule decays to this fraction of the peak learning rate rather than to zero.
MIN_LR_RATIO = 0.1
ENCODE_CHUNK = 4096


@dataclass
class PretrainConfig:
    """Architecture and schedule. The defaults are the `synth-1m` model (about 0.8M non-embedding parameters)."""

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 512
    max_position_embeddings: int = 128
    rotary_pct: float = 0.25  # Pythia rotates a quarter of each head's dimensions
    block_size: int = 64  # tokens per packed training sequence "<eos> s1 <eos> s2 <eos> ..."
    batch_size: int = 32
    # 2000 steps (4.1M tokens, 2.3 epochs of the default 200k-sentence world) bring every synthetic task to >= 0.96;
    # the lexical-knowledge tasks (anaphor_gender, category_question) are still at chance at step 400.
    steps: int = 2000
    lr: float = 3e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    # Log-spaced early (where syntax is learned), then every 400 steps; the last is always `steps`.
    checkpoint_steps: tuple[int, ...] = (0, 25, 50, 100, 200, 400, 800, 1200, 1600, 2000)
    seed: int = 0

    def __post_init__(self) -> None:
        # Hydra hands lists (ListConfig); a tuple of plain ints keeps the config hashable and its hash stable.
        self.checkpoint_steps = tuple(sorted({int(step) for step in self.checkpoint_steps} | {int(self.steps)}))
        problems = []
        if self.steps < 1:
            problems.append(f"steps={self.steps} must be at least 1")
        if self.checkpoint_steps[0] < 0 or self.checkpoint_steps[-1] > self.steps:
            problems.append(f"checkpoint_steps {list(self.checkpoint_steps)} must lie in [0, steps={self.steps}]")
        if self.hidden_size % self.num_heads:
            problems.append(f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}")
        if self.block_size > self.max_position_embeddings:
            problems.append(f"block_size={self.block_size} exceeds max_position_embeddings={self.max_position_embeddings}")
        if not 0 <= self.warmup_steps < self.steps:
            problems.append(f"warmup_steps={self.warmup_steps} must be in [0, steps={self.steps})")
        if problems:
            raise GradspaceError("invalid pretrain config: " + "; ".join(problems) + "; fix model.pretrain")


def revision_name(step: int) -> str:
    return f"step{step}"


def build_model_config(config: PretrainConfig, tokenizer: PreTrainedTokenizerFast) -> GPTNeoXConfig:
    return GPTNeoXConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        intermediate_size=config.intermediate_size,
        max_position_embeddings=config.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": config.rotary_pct},
        use_parallel_residual=True,
        tie_word_embeddings=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


@dataclass
class EncodedCorpus:
    """Token ids of sentences stored end to end in one tensor; 200k separate tiny tensors would cost about 1 GB."""

    tokens: torch.Tensor  # [n_tokens]
    starts: torch.Tensor  # [n_sentences], offset of each sentence in `tokens`
    lengths: torch.Tensor  # [n_sentences]

    @classmethod
    def from_token_lists(cls, sentences: list[list[int]]) -> "EncodedCorpus":
        lengths = torch.tensor([len(ids) for ids in sentences], dtype=torch.long)
        tokens = torch.tensor([token for ids in sentences for token in ids], dtype=torch.long)
        return cls(tokens, torch.cumsum(lengths, 0) - lengths, lengths)

    def __len__(self) -> int:
        return len(self.lengths)

    def concatenated(self, order: torch.Tensor) -> torch.Tensor:
        """The sentences in `order`, end to end, gathered in one vectorised index."""
        lengths = self.lengths[order]
        new_starts = torch.cumsum(lengths, 0) - lengths
        shift = torch.repeat_interleave(self.starts[order] - new_starts, lengths)
        return self.tokens[torch.arange(int(lengths.sum())) + shift]


def encode_corpus(tokenizer: PreTrainedTokenizerFast, sentences: list[str], what: str) -> EncodedCorpus:
    """Each sentence as `<eos> w1 ... wn`, the unit the packer concatenates."""
    if not sentences:
        raise GradspaceError(f"the synthetic world's {what} corpus is empty; raise n_{what}_sentences in model.world")
    encoded: list[list[int]] = []
    # The Rust backend directly (3x faster than the Python wrapper), in chunks: the Encoding objects of a whole
    # 200k-sentence corpus take about 1 GB.
    for start in range(0, len(sentences), ENCODE_CHUNK):
        chunk = tokenizer.backend_tokenizer.encode_batch_fast(sentences[start : start + ENCODE_CHUNK], add_special_tokens=False)
        encoded.extend([tokenizer.eos_token_id, *encoding.ids] for encoding in chunk)
    corpus = EncodedCorpus.from_token_lists(encoded)
    unknown = int((corpus.tokens == tokenizer.unk_token_id).sum())
    if unknown:
        raise GradspaceError(
            f"{unknown} words of the {what} corpus are missing from the world's vocabulary; "
            f"the world generator and its vocabulary disagree, rebuild the world"
        )
    return corpus


def packed_batches(corpus: EncodedCorpus, batch_size: int, block_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless [batch_size, block_size] batches of the sentences packed end to end, reshuffled every epoch.

    Tokens left over at the end of an epoch start the next one, so no sentence is dropped and the order depends
    only on the generator's seed.
    """
    tokens_per_batch = batch_size * block_size
    carry = torch.empty(0, dtype=torch.long)
    while True:
        stream = torch.cat([carry, corpus.concatenated(torch.randperm(len(corpus), generator=generator))])
        full_batches = len(stream) // tokens_per_batch
        for start in range(0, full_batches * tokens_per_batch, tokens_per_batch):
            yield stream[start : start + tokens_per_batch].view(batch_size, block_size)
        carry = stream[full_batches * tokens_per_batch :]


def heldout_blocks(corpus: EncodedCorpus, block_size: int) -> torch.Tensor:
    """The held-out corpus packed in its fixed order into [n, block_size] blocks (the tail is dropped)."""
    n_blocks = len(corpus.tokens) // block_size
    if n_blocks == 0:
        raise GradspaceError(f"the held-out corpus has fewer than block_size={block_size} tokens; raise n_heldout_sentences")
    return corpus.tokens[: n_blocks * block_size].view(n_blocks, block_size)


@torch.no_grad()
def mean_loss(model: GPTNeoXForCausalLM, blocks: torch.Tensor, batch_size: int) -> float:
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(blocks), batch_size):
        batch = blocks[start : start + batch_size]
        total += model(input_ids=batch, labels=batch).loss.item() * len(batch)
        count += len(batch)
    model.train(was_training)
    return total / count


def learning_rate_factor(step: int, config: PretrainConfig) -> float:
    """Linear warmup to the peak, then cosine decay to MIN_LR_RATIO of it at the last step."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * progress))


def build_optimizer(model: torch.nn.Module, config: PretrainConfig) -> torch.optim.AdamW:
    # Weight decay on matrices only; biases and LayerNorm gains stay undecayed, as in GPT-NeoX training.
    decayed = [p for p in model.parameters() if p.ndim >= 2]
    undecayed = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decayed, "weight_decay": config.weight_decay}, {"params": undecayed, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95), eps=1e-8)


def count_parameters(model: GPTNeoXForCausalLM) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight.numel() + model.get_output_embeddings().weight.numel()
    return {"total": total, "non_embedding": total - embedding}


@contextlib.contextmanager
def torch_threads(num_threads: int | None) -> Iterator[int]:
    """Run with `num_threads` intra-op threads (None: leave torch's setting) and restore the old value after."""
    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(max(1, num_threads))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def no_transformers_progress_bars() -> Iterator[None]:
    """Silence the per-save "Writing model shards" bar, which would interleave with the training bar."""
    was_enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            transformers_logging.enable_progress_bar()


def pretrain(
    world: SynthWorld,
    config: PretrainConfig,
    out_dir: Path,
    progress: bool = True,
    name: str | None = None,
    num_threads: int | None = None,
) -> Path:
    """Train a GPT-NeoX model on `world.train_corpus`; write `out_dir/step<N>/` for each checkpoint step, `out_dir/main/`
    (the final step) and `checkpoints.json`; return `out_dir`. (`ensure_synth_model` adds the completion manifest.)"""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = name or out_dir.name
    tokenizer = build_word_tokenizer(world.vocabulary, model_max_length=config.max_position_embeddings)
    train_sentences = encode_corpus(tokenizer, world.train_corpus, "train")
    heldout = heldout_blocks(encode_corpus(tokenizer, world.heldout_corpus, "heldout"), config.block_size)

    with torch_threads(num_threads) as threads:
        start_time = time.perf_counter()
        torch.manual_seed(config.seed)
        model = GPTNeoXForCausalLM(build_model_config(config, tokenizer))
        model.train()
        optimizer = build_optimizer(model, config)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: learning_rate_factor(step, config))
        batches = packed_batches(
            train_sentences, config.batch_size, config.block_size, torch.Generator().manual_seed(config.seed)
        )

        checkpoints: list[dict] = []
        losses_since_checkpoint: list[float] = []

        def save_checkpoint(step: int) -> None:
            checkpoints.append(save_revision(model, tokenizer, out_dir, step, losses_since_checkpoint, heldout, config))
            losses_since_checkpoint.clear()

        if 0 in config.checkpoint_steps:
            save_checkpoint(0)
        train_steps(model, optimizer, scheduler, batches, config, losses_since_checkpoint, save_checkpoint,
                    description=f"pretrain {name}", progress=progress)
        wall_time = time.perf_counter() - start_time

    shutil.copytree(out_dir / revision_name(config.steps), out_dir / FINAL_REVISION, dirs_exist_ok=True)
    final = dict(checkpoints[-1], revision=FINAL_REVISION)
    atomic_write_json(out_dir / CHECKPOINTS_FILE, {
        "name": name,
        "format": CACHE_FORMAT,
        "revisions": [entry["revision"] for entry in checkpoints] + [FINAL_REVISION],
        "checkpoints": checkpoints + [final],
        "parameters": count_parameters(model),
        "vocab_size": len(tokenizer),
        "train_sentences": len(train_sentences),
        "train_tokens": len(train_sentences.tokens),
        "wall_time_s": round(wall_time, 2),
        "num_threads": threads,
        "world_config": asdict(world.config),
        "pretrain_config": asdict(config),
    })
    return out_dir


def save_revision(model, tokenizer, out_dir: Path, step: int, losses: list[float], heldout, config: PretrainConfig) -> dict:
    """Save the model at `step` as its revision directory; its entry of checkpoints.json."""
    train_loss = sum(losses) / len(losses) if losses else None
    directory = out_dir / revision_name(step)
    with no_transformers_progress_bars():
        model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return {
        "revision": revision_name(step),
        "step": step,
        "tokens_seen": step * config.batch_size * config.block_size,
        "train_loss": train_loss,  # mean over the steps since the previous checkpoint
        "heldout_loss": mean_loss(model, heldout, config.batch_size),
    }


def train_steps(model, optimizer, scheduler, batches, config: PretrainConfig, losses_since_checkpoint: list[float],
                save_checkpoint, description: str, progress: bool) -> None:
    """Steps 1..config.steps, each loss kept for the next checkpoint, and `save_checkpoint` at every checkpoint step."""
    smoothed = None
    with tqdm(total=config.steps, desc=description, disable=not progress, dynamic_ncols=True) as bar:
        for step in range(1, config.steps + 1):
            batch = next(batches)
            loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            value = loss.item()
            losses_since_checkpoint.append(value)
            smoothed = value if smoothed is None else 0.95 * smoothed + 0.05 * value
            bar.update(1)
            bar.set_postfix(loss=f"{smoothed:.3f}", lr=f"{scheduler.get_last_lr()[0]:.1e}", refresh=False)
            if step in config.checkpoint_steps:
                save_checkpoint(step)


def config_hash(world_config: WorldConfig, config: PretrainConfig) -> str:
    # The world's own digest also covers its grammar version, so a changed grammar retrains the model.
    payload = {"format": CACHE_FORMAT, "world": world_config.digest(), "pretrain": asdict(config)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def ensure_synth_model(
    name: str,
    world_config: WorldConfig,
    config: PretrainConfig,
    cache_dir: Path,
    progress: bool = True,
    num_threads: int | None = None,
) -> Path:
    """The root of the cached model `name` trained with these configs, pretraining it first if needed.

    `build_once` trains into a hidden partial directory renamed into place when complete, under a file lock, so
    concurrent callers (e.g. DDP ranks) train once, an interrupted run never leaves a half cache, and a cache whose
    files no longer match its manifest (a truncated model.safetensors) is trained again instead of failing forever.
    """
    cache_dir = Path(cache_dir).expanduser()

    def build(partial: Path) -> None:
        world = load_or_build_world(world_config, cache_dir)
        pretrain(world, config, partial, progress=progress, name=name, num_threads=num_threads)

    return build_once(cache_dir / f"{name}-{config_hash(world_config, config)}", build)


def synth_revisions(root: Path) -> list[str]:
    """The checkpoint revisions of a pretrained model root, in training order, ending with `main`."""
    path = Path(root) / CHECKPOINTS_FILE
    if not path.is_file():
        raise GradspaceError(f"{root} is not a pretrained synthetic model (no {CHECKPOINTS_FILE}); pretrain it with ensure_synth_model")
    return list(json.loads(path.read_text(encoding="utf-8"))["revisions"])


def synth_revision_step(root: Path, revision: str) -> int | None:
    """The training step of a revision of a pretrained model root (`main` included); None where the root lists none."""
    path = Path(root) / CHECKPOINTS_FILE
    if not path.is_file():
        return None
    for entry in json.loads(path.read_text(encoding="utf-8")).get("checkpoints", []):
        if entry.get("revision") == revision:
            return int(entry["step"])
    return None
