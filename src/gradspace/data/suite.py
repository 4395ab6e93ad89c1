"""Task suites: where minimal pairs come from, how a task name selects them, and the train/eval split.

A suite is one of
- `synth`: the built-in synthetic world (the offline default; made once and cached),
- `blimp`: the 67 BLiMP paradigms, from a directory of jsonl files or the Hugging Face dataset `nyu-mll/blimp`,
- `jsonl`: the user's own BLiMP-format file or directory.
A task name selects a paradigm, a phenomenon group (all its paradigms) or `all`.
"""

from __future__ import annotations

import hashlib
import itertools
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Mapping

from gradspace.data.blimp_paradigms import BLIMP_PARADIGMS
from gradspace.data.config import DataConfig
from gradspace.errors import GradspaceError
from gradspace.evaluation.logprobs import encode_with_prefix
from gradspace.pairs import MinimalPair, read_pairs_jsonl
from gradspace.synth.world import world_for_model

SUITE_KINDS = ("synth", "blimp", "jsonl")
HF_BLIMP = "nyu-mll/blimp"


@dataclass
class TaskSuite:
    kind: str
    pairs: list[MinimalPair]

    def __post_init__(self) -> None:
        self.phenomena: dict[str, str] = {}
        for pair in self.pairs:
            self.phenomena.setdefault(pair.task, pair.phenomenon)

    @property
    def tasks(self) -> list[str]:
        """Task names ordered by phenomenon, then name, so related tasks sit together in tables and heatmaps."""
        return sorted(self.phenomena, key=lambda task: (self.phenomena[task], task))

    def select(self, names: Iterable[str]) -> list[str]:
        """Resolve paradigm names, phenomenon names and `all` to a task list in suite order."""
        names = list(names)
        if not names:
            raise GradspaceError(f"no task selected for the {self.kind} suite; set task.select.{self.kind}=[<task or phenomenon>, ...]")
        chosen: set[str] = set()
        groups = set(self.phenomena.values())
        for name in names:
            if name == "all":
                chosen.update(self.phenomena)
            elif name in self.phenomena:
                chosen.add(name)
            elif name in groups:
                chosen.update(task for task, group in self.phenomena.items() if group == name)
            else:
                raise GradspaceError(
                    f"unknown task '{name}' in the {self.kind} suite; known phenomena: {', '.join(sorted(groups))}; "
                    f"known tasks: {', '.join(self.tasks)}"
                )
        return [task for task in self.tasks if task in chosen]

    def pairs_for(self, tasks: Iterable[str]) -> list[MinimalPair]:
        wanted = set(tasks)
        return [pair for pair in self.pairs if pair.task in wanted]


def split_position(pair: MinimalPair, seed: int = 0) -> float:
    """Where a pair falls in [0, 1), from a hash of its sentences: duplicates land on the same side of every split."""
    digest = hashlib.sha256(f"{seed}\x00{pair.task}\x00{pair.good}\x00{pair.bad}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass
class PairSplit:
    train: list[MinimalPair]
    eval: list[MinimalPair]
    reserved: list[MinimalPair]  # never trained or evaluated on: the source of held-out text for real LMs


def split_pairs(pairs: list[MinimalPair], eval_fraction: float, seed: int = 0, reserve_fraction: float = 0.0) -> PairSplit:
    """Eval pairs are the lowest `eval_fraction` of hash positions, reserved ones the next `reserve_fraction`."""
    if not 0.0 < eval_fraction < 1.0:
        raise GradspaceError(f"data.eval_fraction={eval_fraction} must lie strictly between 0 and 1")
    if not 0.0 <= reserve_fraction < 1.0 - eval_fraction:
        raise GradspaceError(f"data.reserve_fraction={reserve_fraction} must lie in [0, 1 - eval_fraction)")
    split = PairSplit([], [], [])
    for pair in pairs:
        position = split_position(pair, seed)
        part = split.eval if position < eval_fraction else split.reserved if position < eval_fraction + reserve_fraction else split.train
        part.append(pair)
    return split


def read_pairs_dir(directory: str | Path) -> list[MinimalPair]:
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise GradspaceError(f"{directory}: no such directory; point it at a folder of BLiMP-format .jsonl files")
    files = sorted(directory.glob("*.jsonl"))
    if not files:
        raise GradspaceError(f"{directory}: no .jsonl files in it; put one BLiMP-format file per paradigm there")
    return [pair for path in files for pair in read_pairs_jsonl(path)]


def load_hf_blimp(paradigms: Iterable[str]) -> list[MinimalPair]:
    """BLiMP from the Hugging Face hub (one config per paradigm), for users online."""
    from datasets import load_dataset  # not at the top: seconds to import, and only the online path needs it

    pairs = []
    for uid in paradigms:
        try:
            rows = load_dataset(HF_BLIMP, uid, split="train")
        except Exception as err:  # datasets raises many types when the hub is unreachable
            raise GradspaceError(
                f"could not load {HF_BLIMP}/{uid} from the hub ({type(err).__name__}); go online once, "
                f"or set paths.blimp_dir=<folder with the BLiMP jsonl files>"
            ) from None
        # As from a BLiMP directory: pairs whose two sentences are the same are no minimal pairs (passive_1 and
        # principle_A_case_2 have some).
        pairs.extend(
            MinimalPair(row["sentence_good"], row["sentence_bad"], uid, row.get("linguistics_term") or BLIMP_PARADIGMS[uid],
                        str(row.get("pairID", i)), source=f"{HF_BLIMP}/{uid}:{i}")
            for i, row in enumerate(rows) if row["sentence_good"].strip() != row["sentence_bad"].strip()
        )
    return pairs


def suite_kind(data: DataConfig, model_cfg: Mapping) -> str:
    """`auto` follows the model: synthetic models speak the synthetic language, real ones English."""
    source = data.source
    if source == "auto":
        return "synth" if model_cfg.get("source") == "synth" else "blimp"
    if source not in SUITE_KINDS:
        raise GradspaceError(f"data.source='{source}' is unknown; use auto or one of {', '.join(SUITE_KINDS)}")
    return source


def load_suite(data: DataConfig, model_cfg: Mapping, cache_dir: Path, blimp_dir: str | Path | None = None,
               hf_paradigms: Iterable[str] | None = None) -> TaskSuite:
    """Read the suite named by `data.source`. Reading BLiMP from the hub is limited to `hf_paradigms` when given."""
    kind = suite_kind(data, model_cfg)
    if kind == "synth":
        return TaskSuite("synth", world_for_model(model_cfg, cache_dir).pairs)
    if kind == "blimp":
        if blimp_dir:
            return TaskSuite("blimp", read_pairs_dir(blimp_dir))
        return TaskSuite("blimp", load_hf_blimp(hf_paradigms or BLIMP_PARADIGMS))
    path = data.path
    if not path:
        raise GradspaceError("data.source=jsonl needs data.path=<a .jsonl file or a folder of them>")
    path = Path(path).expanduser()
    return TaskSuite("jsonl", read_pairs_dir(path) if path.is_dir() else read_pairs_jsonl(path))


def blimp_paradigms_for(names: Iterable[str]) -> list[str]:
    """Paradigms a BLiMP selection needs, known before any data is read (lets the hub path fetch only those)."""
    wanted = []
    for name in names:
        if name == "all":
            return list(BLIMP_PARADIGMS)
        matches = [uid for uid, term in BLIMP_PARADIGMS.items() if name in (uid, term)]
        if not matches:
            raise GradspaceError(
                f"unknown BLiMP task '{name}'; known phenomena: {', '.join(sorted(set(BLIMP_PARADIGMS.values())))} (or a paradigm UID)"
            )
        wanted.extend(uid for uid in matches if uid not in wanted)
    return wanted


@dataclass
class TaskData:
    """The pairs one run works with: the selected tasks' train and eval pairs, and every task's eval pairs."""

    suite: TaskSuite
    tasks: list[str]
    train: list[MinimalPair]
    eval: list[MinimalPair]
    eval_all: list[MinimalPair]  # eval pairs of every evaluated task (all of the suite's unless eval_all_tasks=false)
    split: PairSplit  # the whole suite's split, reserved pairs included

    def heldout_pair_sentences(self, limit: int | None) -> list[str]:
        """Good sentences of reserved pairs, taken from every task in turn, that occur in no trained or evaluated
        pair of the suite: text no run of this split trains or evaluates on, even where pairs repeat a sentence."""
        used = {sentence for pair in self.split.train + self.split.eval for sentence in (pair.good, pair.bad)}
        by_task: dict[str, dict[str, None]] = {}  # each task's sentences in order, once
        for pair in self.split.reserved:
            if pair.good not in used:
                by_task.setdefault(pair.task, {})[pair.good] = None
        interleaved = [sentence for row in itertools.zip_longest(*by_task.values()) for sentence in row if sentence is not None]
        return list(dict.fromkeys(interleaved))[:limit]


def prepare_task_data(task_cfg: Mapping, data_cfg: Mapping, model_cfg: Mapping, cache_dir: Path,
                      blimp_dir: str | Path | None = None) -> TaskData:
    data = DataConfig.from_section(data_cfg)
    kind = suite_kind(data, model_cfg)
    select = task_cfg.get("select") or {}
    names = list(select.get(kind) or [])
    if not names:
        raise GradspaceError(
            f"task '{task_cfg.get('name')}' names nothing for the {kind} suite; add task.select.{kind}=[...] "
            f"or pick a task config that covers it"
        )
    eval_all_tasks = bool(data.eval_all_tasks)
    hf_paradigms = None
    if kind == "blimp" and not blimp_dir:
        # Online BLiMP: fetch what the run evaluates; transfer rows over all tasks need all paradigms.
        hf_paradigms = list(BLIMP_PARADIGMS) if eval_all_tasks else blimp_paradigms_for(names)
    suite = load_suite(data, model_cfg, cache_dir, blimp_dir=blimp_dir, hf_paradigms=hf_paradigms)
    tasks = suite.select(names)
    chosen = set(tasks)
    split = split_pairs(suite.pairs, float(data.eval_fraction), int(data.split_seed), float(data.reserve_fraction))
    evaluated = split.eval if eval_all_tasks else [pair for pair in split.eval if pair.task in chosen]
    eval_all = _cap_per_task(evaluated, data.max_eval_pairs_per_task)
    train = _cap_per_task([pair for pair in split.train if pair.task in chosen], data.max_train_pairs_per_task)
    evaluation = [pair for pair in eval_all if pair.task in chosen]
    if not train or not evaluation:
        raise GradspaceError(
            f"task '{task_cfg.get('name')}' has {len(train)} training and {len(evaluation)} eval pairs after the split; "
            f"it needs both: add pairs or change data.eval_fraction"
        )
    return TaskData(suite=suite, tasks=tasks, train=train, eval=evaluation, eval_all=eval_all, split=split)


def _cap_per_task(pairs: list[MinimalPair], cap: int | None) -> list[MinimalPair]:
    if cap is None:
        return pairs
    counts: dict[str, int] = {}
    kept = []
    for pair in pairs:
        if counts.get(pair.task, 0) < int(cap):
            counts[pair.task] = counts.get(pair.task, 0) + 1
            kept.append(pair)
    return kept


def example_of(pairs: set[MinimalPair], task: str | None = None) -> str:
    """The first of `pairs` (of `task`, if given) by where it was read, for a message."""
    pair = min((p for p in pairs if task is None or p.task == task), key=lambda p: (p.source, p.task, p.id))
    return f"e.g. {pair.source or f'pair {pair.id} of task {pair.task}'}: '{pair.good}' / '{pair.bad}'"


_REPORTED_ALIKE: set[tuple[str, ...]] = set()


def without_identical_tokenizations(task_data: TaskData, tokenizer) -> TaskData:
    """`task_data` without the pairs whose two sentences are the same tokens to `tokenizer` (both all `<unk>`, or
    differing only in what it drops), left out with a warning as pairs of identical strings are: their gradient
    differential is zero up to rounding, so a cosine of it is noise. A task left with none is an error."""
    pairs = list(dict.fromkeys([*task_data.train, *task_data.eval, *task_data.eval_all]))
    goods = encode_with_prefix(tokenizer, [pair.good for pair in pairs])
    bads = encode_with_prefix(tokenizer, [pair.bad for pair in pairs])
    alike = {pair for pair, good, bad in zip(pairs, goods, bads) if good == bad}
    if not alike:
        return task_data
    kept = replace(task_data, train=[p for p in task_data.train if p not in alike],
                   eval=[p for p in task_data.eval if p not in alike],
                   eval_all=[p for p in task_data.eval_all if p not in alike])
    for task in task_data.tasks:
        for purpose, before, after in (("train on", task_data.train, kept.train), ("evaluate", task_data.eval_all, kept.eval_all)):
            if any(pair.task == task for pair in before) and not any(pair.task == task for pair in after):
                raise GradspaceError(
                    f"task {task}: the model's tokenizer makes the two sentences of every pair left to {purpose} "
                    f"the same tokens ({example_of(alike, task)}); use words in its vocabulary or another model"
                )
    sources = tuple(sorted(pair.source or f"{pair.task}:{pair.id}" for pair in alike))
    if sources not in _REPORTED_ALIKE:  # said once per process: a probe prepares the same pairs for every copy
        _REPORTED_ALIKE.add(sources)
        print(f"warning: left out {len(alike)} pair(s) whose sentence_good and sentence_bad the model's tokenizer "
              f"makes the same tokens ({example_of(alike)}); a model cannot tell them apart: fix or remove them",
              file=sys.stderr)
    return kept
