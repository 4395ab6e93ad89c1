"""A checkpoint's measurements without fine-tuning: its accuracy per task and the gradient spaces of each objective,
each piece kept in the run directory's store for resuming."""

from __future__ import annotations

import time

from tqdm.auto import tqdm

from gradspace.data.suite import TaskData
from gradspace.errors import GradspaceError
from gradspace.evaluation.minimal_pairs import evaluate_pairs
from gradspace.pairs import pairs_fingerprint
from gradspace.probing.config import GradientConfig, ProbeConfig
from gradspace.probing.gradient_similarity import GradientSpace
from gradspace.probing.resume import ResumeStore, safe_name
from gradspace.probing.spaces import gradient_entries
from gradspace.probing.task_gradients import add_task_gradients
from gradspace.utils.cache import fingerprint


def stage_bar(progress: bool, description: str, total: int):
    """One bar per stage (its tasks cost alike, so its remaining time is meaningful)."""
    return tqdm(total=total, desc=description, unit="task", disable=not progress, dynamic_ncols=True)


def reused(bar, what: str) -> None:
    """A piece found in the run directory: out of the bar's total, so its rate and remaining time stay true."""
    bar.total -= 1
    bar.set_postfix_str(f"reused {what}", refresh=True)


def gradient_pairs(task_data: TaskData, max_pairs: int | None) -> dict[str, list]:
    by_task: dict[str, list] = {task: [] for task in task_data.tasks}
    for pair in task_data.train:
        if max_pairs is None or len(by_task[pair.task]) < max_pairs:
            by_task[pair.task].append(pair)
    empty = [task for task, pairs in by_task.items() if not pairs]
    if empty:
        raise GradspaceError(f"task(s) {', '.join(empty)} have no training pairs to take gradients of; add pairs or "
                             f"lower data.eval_fraction")
    return by_task


def measure_gradients(gradient: GradientConfig, progress: bool, loaded, model_cfg: dict, task_data: TaskData,
                      objective: str, store: ResumeStore, where: str) -> GradientSpace:
    """Every task's gradient of `objective`, streamed into one space; a task measured before is read from the store."""
    space = GradientSpace.for_model(loaded.model, gradient.space_config())
    pairs = gradient_pairs(task_data, gradient.max_pairs_per_task)
    settings = gradient.fingerprint_settings()
    with stage_bar(progress, f"{where} gradient {objective}", len(pairs)) as bar:
        for task, task_pairs in pairs.items():
            relative = f"gradients/{where}/{objective}/{safe_name(task)}.npz"
            key = fingerprint(model_cfg, objective, settings, pairs_fingerprint(task_pairs))
            state = store.load_task_state(relative, key)
            if state is not None:
                space.add_state(state)
                reused(bar, task)
                continue
            bar.set_postfix_str(task, refresh=False)
            for _ in add_task_gradients(space, loaded.model, loaded.tokenizer, {task: task_pairs}, objective,
                                        gradient.batch_size):
                store.save_task_state(relative, key, space.task_state(task))
            bar.update(1)
    return space


def gradient_spaces(probe: ProbeConfig, loaded, model_cfg: dict, task_data: TaskData, store: ResumeStore,
                    where: str) -> tuple[dict[str, dict], dict[str, dict]]:
    """The entries of every gradient space (`spaces.gradient_entries`), and per objective its norms, memory and time.
    One objective's space is held at a time."""
    entries, info = {}, {}
    for objective in probe.gradient.objectives:
        start = time.perf_counter()
        space = measure_gradients(probe.gradient, probe.progress, loaded, model_cfg, task_data, objective, store, where)
        entries.update(gradient_entries(space, objective, task_data.tasks, task_data.suite.phenomena,
                                        probe.hypothesis.n_permutations, probe.seed))
        info[objective] = {"norms": space.norms(), "state_bytes": space.state_bytes(), "top_fraction": space.top_fraction,
                           "seconds": round(time.perf_counter() - start, 2)}
        del space
    return entries, info


def measure_evaluation(loaded, model_cfg: dict, pairs: list, store: ResumeStore, where: str) -> dict:
    """The checkpoint's accuracy and margin per task before any fine-tuning."""
    relative, key = f"evaluation/{where}.json", fingerprint(model_cfg, pairs_fingerprint(pairs))
    saved = store.load_json(relative, key)
    if saved is not None:
        return saved
    evaluation = evaluate_pairs(loaded.model, loaded.tokenizer, pairs, desc=f"{where} evaluate ({len(pairs)} pairs)").to_dict()
    store.save_json(relative, key, evaluation)
    return evaluation
