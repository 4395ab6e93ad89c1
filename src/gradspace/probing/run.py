"""Similarity probing: a model's linguistic task space at one or more checkpoints, compared with the hypothesis.

For every checkpoint (model × revision) it measures
- the transfer matrix: one FTGD fine-tuning per task (`gradspace.ftgd.run.run` on the composed train config),
  each copy evaluated on every task, or the same results read from a `train.py -m` sweep directory or a W&B group;
- gradient similarity with no fine-tuning: per task, the gradient of the FTGD objective (the gradient
  differential) and of the LM baseline, compared by cosine and top-k overlap, overall and per module;
and compares each space with same-phenomenon = 1 (Spearman, permutation p-value, within vs across means).
Writes results.json, PNGs and (when a logger is configured) W&B images and tables; prints a summary.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict
from tqdm.auto import tqdm

from gradspace.data.suite import TaskData, prepare_task_data, without_identical_tokenizations
from gradspace.errors import GradspaceError
from gradspace.evaluation.minimal_pairs import evaluate_pairs
from gradspace.ftgd.callbacks import BaseMeasurement
from gradspace.ftgd.objectives import check_objective
from gradspace.ftgd.run import run as run_ftgd
from gradspace.models.loading import SINGLE_REVISION_SOURCES, check_model_config, load_model, resolve_pretrained_path
from gradspace.pairs import pairs_fingerprint
from gradspace.probing.gradient_similarity import OVERALL, GradientSpace, GradientSpaceConfig
from gradspace.probing.granularity import at_granularity, check_granularity, phenomenon_records
from gradspace.probing.hypothesis import compare_with_hypothesis, within_minus_across
from gradspace.probing.report import log_to_trackers, make_plots, print_summary
from gradspace.probing.resume import ResumeStore, safe_name
from gradspace.probing.task_gradients import add_task_gradients
from gradspace.probing.transfer import (
    SweepRecords,
    TransferMatrix,
    assemble_transfer,
    group_by_checkpoint,
    matrix_to_json,
    read_multirun_dir,
    read_wandb_group,
    trained_task,
)
from gradspace.utils.cache import fingerprint
from gradspace.utils.io import RESULTS_FILE, check_output_dir, write_results
from gradspace.utils.memory import return_freed_memory
from gradspace.utils.run_config import loggable_config, plain_section
from gradspace.utils.seeding import check_seed, seed_everything, set_torch_threads
from gradspace.utils.termination import Terminated

log = logging.getLogger(__name__)

# Only for library calls outside a Hydra app (probe.py's run() composes on the app's own search path): the configs
# shipped with the package (src/gradspace/conf links to the repository's conf/; a wheel holds a copy).
PACKAGE_CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
# Written beside a fine-tuning job's results.json once it finished: the fingerprint of its config, for resuming.
JOB_MARKER = "probe_job.json"


@dataclass
class Checkpoint:
    model_cfg: dict  # resolved model config, revision included
    records: list[dict] | None = None  # transfer results read from a sweep or W&B; None: fine-tune here or skip

    @property
    def name(self) -> str:
        """`model@revision`."""
        return f"{self.model_cfg['name']}@{self.model_cfg['revision']}"


# --------------------------------------------------------------------------------------------- configuration


@contextlib.contextmanager
def hydra_search_path():
    """Inside a Hydra app (probe.py), the app's own config search path; else (a library call) the package's conf/."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        yield GlobalHydra.instance()
        return
    if not PACKAGE_CONF_DIR.is_dir():
        raise GradspaceError(f"no Hydra app is running and {PACKAGE_CONF_DIR} does not exist; reinstall gradspace, or call "
                             f"run() from probe.py (or inside hydra.initialize_config_dir(<the repository's conf/>))")
    with initialize_config_dir(config_dir=str(PACKAGE_CONF_DIR), version_base="1.3"):
        yield GlobalHydra.instance()


def compose_config(config_name: str, overrides: list[str]) -> DictConfig:
    """Compose a primary config of this repository (train, probe) on the current search path."""
    from hydra import compose

    with hydra_search_path():
        return compose(config_name=config_name, overrides=overrides)


def command_line_sets(key: str) -> bool:
    """Whether the Hydra command line overrides `key` (e.g. a `-m model.revision=...` sweep)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return False
    return any(re.fullmatch(rf"[+~]*{re.escape(key)}=.*", item) for item in HydraConfig.get().overrides.task)


def requested_revisions(cfg: DictConfig) -> list[str]:
    """`revisions` (a list), unless the command line sets `model.revision`: then that one revision."""
    revisions = cfg.get("revisions")
    if revisions is None or command_line_sets("model.revision"):
        return [str(cfg.model.revision)]
    revisions = [str(revision) for revision in revisions]
    if not revisions:
        raise GradspaceError("revisions=[] names no checkpoint; list some (revisions=[step200,main]) or set revisions=null")
    return revisions


def model_configs(cfg: DictConfig) -> list[dict]:
    """The main model config and those of `models` (config names under conf/model), for size comparisons."""
    configs = [plain_section(cfg.model)]
    check_model_config(configs[0])
    for name in cfg.get("models") or []:
        try:
            configs.append(plain_section(compose_config("probe", [f"model={name}"]).model))
            check_model_config(configs[-1])
        except Exception as err:  # hydra's MissingConfigException and friends
            if "Could not find" in str(err) or "MissingConfig" in type(err).__name__:
                with hydra_search_path() as hydra:
                    known = sorted(hydra.config_loader().get_group_options("model"))
                raise GradspaceError(f"models: no model config '{name}'; choose from {', '.join(known)}") from None
            raise
    return configs


def transfer_records(cfg: DictConfig) -> tuple[SweepRecords | None, str]:
    source = cfg.source
    if source.get("multirun_dir") and source.get("wandb_group"):
        raise GradspaceError("set only one of source.multirun_dir and source.wandb_group")
    if source.get("multirun_dir"):
        return read_multirun_dir(source.multirun_dir), f"multirun_dir:{source.multirun_dir}"
    if source.get("wandb_group"):
        wandb_cfg = (cfg.get("logger") or {}).get("wandb") or {}
        read = read_wandb_group(str(source.wandb_group), project=str(wandb_cfg.get("project") or "gradspace"),
                                entity=wandb_cfg.get("entity"), mode=str(wandb_cfg.get("mode") or "auto"))
        return read, f"wandb_group:{source.wandb_group}"
    return None, "inprocess" if source.get("inprocess", True) else "none"


def revisions_of(model_cfg: dict, requested: list[str]) -> list[str]:
    """The requested revisions a model has: a local directory or a GGUF file is one model, `main`."""
    if model_cfg.get("source") in SINGLE_REVISION_SOURCES:
        if requested != ["main"]:
            log.info("%s is a single saved model (source %s): probing its one revision, main, not %s",
                     model_cfg.get("name"), model_cfg.get("source"), ", ".join(requested))
        return ["main"]
    return requested


def plan_checkpoints(cfg: DictConfig, read: SweepRecords | None) -> list[Checkpoint]:
    if read is None:
        return [Checkpoint({**model_cfg, "revision": revision}) for model_cfg in model_configs(cfg)
                for revision in revisions_of(model_cfg, requested_revisions(cfg))]
    objective = str(cfg.transfer.objective)
    grouped = group_by_checkpoint(read.records)
    objectives = {key[2] for key in grouped}
    if len(objectives) > 1:
        grouped = {key: records for key, records in grouped.items() if key[2] == objective}
        if not grouped:
            raise GradspaceError(f"the sweep has objectives {', '.join(sorted(objectives))} but not transfer.objective={objective}; set it to one of them")
    checkpoints = []
    for records in grouped.values():
        model_cfg = (records[0].get("config") or {}).get("model")
        if not model_cfg:
            raise GradspaceError(f"{records[0].get('_source')}: its results.json has no config.model; rerun it with the current train.py")
        checkpoints.append(Checkpoint(dict(model_cfg), records))
    return checkpoints


# --------------------------------------------------------------------------------------------- measurements


def gradient_pairs(task_data: TaskData, max_pairs: int | None) -> dict[str, list]:
    by_task: dict[str, list] = {task: [] for task in task_data.tasks}
    for pair in task_data.train:
        if max_pairs is None or len(by_task[pair.task]) < max_pairs:
            by_task[pair.task].append(pair)
    empty = [task for task, pairs in by_task.items() if not pairs]
    if empty:
        raise GradspaceError(f"task(s) {', '.join(empty)} have no training pairs to take gradients of; add pairs or lower data.eval_fraction")
    return by_task


def stage_bar(cfg: DictConfig, description: str, total: int):
    """One bar per stage (its tasks cost alike, so its remaining time is meaningful)."""
    return tqdm(total=total, desc=description, unit="task", disable=not cfg.progress, dynamic_ncols=True)


def reused(bar, what: str) -> None:
    """A piece found in the run directory: out of the bar's total, so its rate and remaining time stay true."""
    bar.total -= 1
    bar.set_postfix_str(f"reused {what}", refresh=True)


def measure_gradients(cfg: DictConfig, loaded, model_cfg: dict, task_data: TaskData, objective: str,
                      store: ResumeStore, where: str) -> GradientSpace:
    space = GradientSpace.for_model(loaded.model, GradientSpaceConfig(
        sketch_dim=int(cfg.gradient.sketch_dim), top_fraction=float(cfg.gradient.top_fraction),
        max_top_k=int(cfg.gradient.max_top_k), seed=int(cfg.gradient.seed)))
    pairs = gradient_pairs(task_data, cfg.gradient.get("max_pairs_per_task"))
    settings = {**plain_section(cfg.gradient), "objectives": None}
    with stage_bar(cfg, f"{where} gradient {objective}", len(pairs)) as bar:
        for task, task_pairs in pairs.items():
            relative = f"gradients/{where}/{objective}/{safe_name(task)}.npz"
            key = fingerprint(model_cfg, objective, settings, pairs_fingerprint(task_pairs))
            state = store.load_task_state(relative, key)
            if state is not None:
                space.add_state(state)
                reused(bar, task)
                continue
            bar.set_postfix_str(task, refresh=False)
            for _ in add_task_gradients(space, loaded.model, loaded.tokenizer, {task: task_pairs}, objective, int(cfg.gradient.batch_size)):
                store.save_task_state(relative, key, space.task_state(task))
            bar.update(1)
    return space


def measure_evaluation(cfg: DictConfig, loaded, model_cfg: dict, pairs: list, store: ResumeStore, where: str) -> dict:
    """The checkpoint's accuracy and margin per task before any fine-tuning."""
    relative, key = f"evaluation/{where}.json", fingerprint(model_cfg, pairs_fingerprint(pairs))
    saved = store.load_json(relative, key)
    if saved is not None:
        return saved
    evaluation = evaluate_pairs(loaded.model, loaded.tokenizer, pairs, desc=f"{where} evaluate ({len(pairs)} pairs)").to_dict()
    store.save_json(relative, key, evaluation)
    return evaluation


@contextlib.contextmanager
def quiet_transformers():
    """No per-load "Loading weights" bars under the probe's own progress bar."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def quiet_lightning():
    """The per-task trainers' banners and data-loader hints would bury the progress bar."""
    loggers = [logging.getLogger(name) for name in ("lightning", "lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def train_config(cfg: DictConfig, model_cfg: dict, task: str, output_dir: Path, objective: str | None = None,
                 own_task_only: bool = False) -> DictConfig:
    """The `train.py` config of one transfer row: this task alone, no tracker, no checkpoints.

    The data settings are the probe's (the same split as the gradients), with `data.*` items of
    `transfer.train_overrides` applied on top. `own_task_only`: evaluate the tuned task alone (a side-effect copy).
    """
    extra = [str(item) for item in cfg.transfer.get("train_overrides") or []]
    if own_task_only:
        extra.append("data.eval_all_tasks=false")
    overrides = [
        "~model", "task=paradigm", f"task.name={task}", f"objective={objective or cfg.transfer.objective}", "logger=none",
        "callbacks.model_checkpoint=null", "trainer.enable_checkpointing=false", f"seed={int(cfg.seed)}",
        "+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false",
        *extra,
    ]
    train_cfg = compose_config("train", overrides)
    data_overrides = OmegaConf.from_dotlist([item for item in extra if item.startswith("data.")]).get("data") or {}
    with open_dict(train_cfg):
        train_cfg.model = OmegaConf.create(model_cfg)
        train_cfg.data = OmegaConf.merge(plain_section(cfg.data), data_overrides)
        train_cfg.paths = OmegaConf.create({**plain_section(cfg.paths), "output_dir": str(output_dir)})
    return train_cfg


def finetune_rows(cfg: DictConfig, checkpoint: Checkpoint, tasks: list[str], output_dir: Path, store: ResumeStore,
                  objective: str, own_task_only: bool = False) -> list[dict]:
    """One FTGD job per task, in this process; each writes the results.json a sweep job would write, and a job whose
    results.json is already there with the same config (a killed probe rerun in its directory) is not run again."""
    records, base = [], None
    folder = "transfer" if not own_task_only else f"side_effects/{objective}"
    with stage_bar(cfg, f"{checkpoint.name} fine-tune {objective}" + (" (own task only)" if own_task_only else ""), len(tasks)) as bar:
        for task in tasks:
            job_dir = output_dir / folder / safe_name(checkpoint.name) / safe_name(task)
            train_cfg = train_config(cfg, checkpoint.model_cfg, task, job_dir, objective, own_task_only)
            record = finished_job(store, job_dir, train_cfg)
            if record is not None:
                reused(bar, task)
            else:
                bar.set_postfix_str(task, refresh=False)
                with quiet_lightning():
                    record = run_ftgd(train_cfg, base)
                store.save_json(str(job_dir.relative_to(store.root) / JOB_MARKER), job_fingerprint(train_cfg), {"task": task})
                bar.update(1)
            base = base or BaseMeasurement.of_results(record)
            record["_source"] = str(job_dir / RESULTS_FILE)
            records.append(record)
    return records


def finished_job(store: ResumeStore, job_dir: Path, train_cfg: DictConfig) -> dict | None:
    """The results of a fine-tuning job that finished in `job_dir` with this very config, else None."""
    marker = store.load_json(str(job_dir.relative_to(store.root) / JOB_MARKER), job_fingerprint(train_cfg))
    path = job_dir / RESULTS_FILE
    if marker is None or not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return record if record.get("status") == "ok" else None


def job_fingerprint(train_cfg: DictConfig) -> str:
    return fingerprint(loggable_config(train_cfg))


def copy_side_effects(records: list[dict]) -> list[dict]:
    """Per fine-tuned copy: its held-out LM-loss change and the accuracy and margin change on its own task."""
    copies = []
    for record in records:
        task = trained_task(record)
        before, after = record["eval_before"].get(task), record["eval_after"].get(task)
        own = None if before is None or after is None else {
            f"{key}_{when}": value for key in ("accuracy", "margin")
            for when, value in (("before", before[key]), ("after", after[key]), ("delta", after[key] - before[key]))}
        copies.append({"task": task, "objective": record.get("objective"), "steps": record.get("steps"),
                       "heldout_lm_loss": record.get("heldout_lm_loss"), "own_task": own})
    return copies


def space_entry(matrix: np.ndarray, tasks: list[str], phenomena: dict, symmetric: bool, cfg: DictConfig) -> dict:
    comparison = compare_with_hypothesis(matrix, tasks, phenomena, symmetric=symmetric,
                                         n_permutations=int(cfg.hypothesis.n_permutations), seed=int(cfg.seed))
    return {"matrix": matrix_to_json(matrix), "symmetric": symmetric, "hypothesis": comparison.to_dict()}


def gradient_entries(space: GradientSpace, objective: str, tasks: list[str], phenomena: dict, cfg: DictConfig) -> dict:
    entries = {}
    for measure, compute in (("cosine", space.cosine), ("jaccard", space.jaccard)):
        levels = {level: space_entry(compute(level), tasks, phenomena, True, cfg) for level in space.levels()}
        entries[f"gradient_{objective}_{measure}"] = {**levels[OVERALL], "levels": {k: v for k, v in levels.items() if k != OVERALL}}
    return entries


def revision_step(model_cfg: dict, path: str) -> int | None:
    """Training step of a checkpoint: from `step<N>`, or for a synthetic `main` from its checkpoints.json."""
    match = re.fullmatch(r"step(\d+)", str(model_cfg.get("revision")))
    if match:
        return int(match.group(1))
    listing = Path(path).parent / "checkpoints.json"
    if listing.is_file():
        for entry in json.loads(listing.read_text(encoding="utf-8")).get("checkpoints", []):
            if entry.get("revision") == model_cfg.get("revision"):
                return int(entry["step"])
    return None


def probe_checkpoint(cfg: DictConfig, checkpoint: Checkpoint, source: str, cache_dir: Path, output_dir: Path,
                     task_data: TaskData, store: ResumeStore) -> dict:
    start = time.perf_counter()
    where = safe_name(checkpoint.name)
    granularity = str(cfg.granularity)
    loaded = load_model(checkpoint.model_cfg, cache_dir, device=str(cfg.device), progress=bool(cfg.progress))
    task_data = without_identical_tokenizations(task_data, loaded.tokenizer)
    tasks, phenomena = task_data.tasks, task_data.suite.phenomena
    evaluation = measure_evaluation(cfg, loaded, checkpoint.model_cfg, [p for p in task_data.eval_all if p.task in set(tasks)], store, where)
    spaces: dict[str, dict] = {}
    gradient_info = {}
    for objective in cfg.gradient.objectives:
        objective_start = time.perf_counter()
        space = measure_gradients(cfg, loaded, checkpoint.model_cfg, task_data, str(objective), store, where)
        spaces.update(gradient_entries(space, str(objective), tasks, phenomena, cfg))
        gradient_info[str(objective)] = {"norms": space.norms(), "state_bytes": space.state_bytes(), "top_fraction": space.top_fraction,
                                         "seconds": round(time.perf_counter() - objective_start, 2)}
        del space
    step = revision_step(checkpoint.model_cfg, loaded.path)
    del loaded
    return_freed_memory()  # the model's and the gradient sets' pages, before the copies or the next model load theirs
    transfer_info: dict[str, Any] = {"source": source}
    if source != "none":
        records = checkpoint.records
        transfer_start = time.perf_counter()
        if records is None:
            records = finetune_rows(cfg, checkpoint, tasks, output_dir, store, str(cfg.transfer.objective))
        if granularity == "phenomenon":
            records = phenomenon_records(records, phenomena)
        matrix: TransferMatrix = assemble_transfer(records, tasks=tasks, phenomena=phenomena)
        spaces["transfer_accuracy"] = space_entry(matrix.accuracy, tasks, phenomena, False, cfg)
        spaces["transfer_margin"] = space_entry(matrix.margin, tasks, phenomena, False, cfg)
        transfer_info.update(missing_rows=matrix.missing_rows, results_files=[str(r.get("_source")) for r in records],
                             heldout_lm_loss_delta={trained_task(r): r.get("heldout_lm_loss", {}).get("delta") for r in records},
                             copies=copy_side_effects(records), seconds=round(time.perf_counter() - transfer_start, 2))
        if source == "inprocess":
            for objective in cfg.transfer.get("side_effect_objectives") or []:
                side = finetune_rows(cfg, checkpoint, tasks, output_dir, store, str(objective), own_task_only=True)
                if granularity == "phenomenon":
                    side = phenomenon_records(side, phenomena)
                transfer_info["copies"].extend(copy_side_effects(side))
    return {"model": checkpoint.model_cfg["name"], "revision": checkpoint.model_cfg["revision"], "step": step,
            "checkpoint": checkpoint.name, "tasks": list(tasks), "evaluation": evaluation, "spaces": spaces, "gradient": gradient_info, "transfer": transfer_info,
            "seconds": round(time.perf_counter() - start, 2)}


# --------------------------------------------------------------------------------------------- summaries


def summary_rows(checkpoints: list[dict]) -> list[dict]:
    rows = []
    for entry in checkpoints:
        for name, space in entry["spaces"].items():
            h = space["hypothesis"]
            rows.append({"checkpoint": entry["checkpoint"], "model": entry["model"], "revision": entry["revision"], "step": entry["step"],
                         "space": name, "within": h["within_mean"], "across": h["across_mean"],
                         "within_minus_across": within_minus_across(h["within_mean"], h["across_mean"]),
                         "spearman": h["spearman"], "p_value": h["p_value"]})
    return rows


def trends(rows: list[dict]) -> list[dict]:
    """Per model and space: within − across and Spearman at each of its checkpoints."""
    out = []
    for model in dict.fromkeys(row["model"] for row in rows):
        for space in dict.fromkeys(row["space"] for row in rows if row["model"] == model):
            points = [row for row in rows if row["model"] == model and row["space"] == space]
            out.append({"model": model, "space": space, "revisions": [r["revision"] for r in points],
                        "within_minus_across": [r["within_minus_across"] for r in points], "within": [r["within"] for r in points],
                        "spearman": [r["spearman"] for r in points]})
    return out


# --------------------------------------------------------------------------------------------- entry point


def run(cfg: DictConfig) -> dict:
    """Probe every requested checkpoint; write results.json and plots under `paths.output_dir`; return the results."""
    start = time.perf_counter()
    output_dir = check_output_dir(cfg.paths.output_dir)
    cache_dir = Path(cfg.paths.cache_dir).expanduser()
    seed_everything(check_seed(cfg.seed))
    set_torch_threads(cfg.get("torch_threads"))
    for objective in [*cfg.gradient.objectives, cfg.transfer.objective, *(cfg.transfer.get("side_effect_objectives") or [])]:
        check_objective(str(objective))
    check_granularity(str(cfg.granularity))

    read, source = transfer_records(cfg)
    checkpoints = plan_checkpoints(cfg, read)
    task_data_by_model: dict[str, TaskData] = {}
    # The suite of each model (the synthetic world follows the model's config); read before any long work,
    # so a bad task name fails at once.
    for checkpoint in checkpoints:
        name = checkpoint.model_cfg["name"]
        if name not in task_data_by_model:
            task_data = prepare_task_data(cfg.task, cfg.data, checkpoint.model_cfg, cache_dir, cfg.paths.get("blimp_dir"))
            task_data_by_model[name] = at_granularity(task_data, str(cfg.granularity))
            tasks = task_data_by_model[name].tasks
            if len(tasks) < 2:
                raise GradspaceError(f"task '{cfg.task.name}' selects {len(tasks)} task ({', '.join(tasks)}) at granularity={cfg.granularity}; "
                                     f"a task space needs at least 2: select a phenomenon with several paradigms, or task=all")
    # Pretrain a synthetic model that is not cached yet (with its own progress bar) and check every revision exists,
    # before the long loop starts.
    for checkpoint in checkpoints:
        resolve_pretrained_path(checkpoint.model_cfg, cache_dir, progress=bool(cfg.progress))
    first = task_data_by_model[checkpoints[0].model_cfg["name"]]
    store = ResumeStore(output_dir, enabled=bool(cfg.resume))
    entries = []
    try:
        with quiet_transformers():
            for checkpoint in checkpoints:
                task_data = task_data_by_model[checkpoint.model_cfg["name"]]
                entries.append(probe_checkpoint(cfg, checkpoint, source, cache_dir, output_dir, task_data, store))
    except (Terminated, KeyboardInterrupt) as stop:  # a probe resumes from its store, not from a job's checkpoint
        raise type(stop)(f"; the finished measurements are kept: rerun with hydra.run.dir={output_dir} to resume") from None

    results: dict[str, Any] = {
        "status": "ok",
        "granularity": str(cfg.granularity),
        "tasks": first.tasks,
        "phenomena": {task: group for data in task_data_by_model.values() for task, group in data.suite.phenomena.items()
                      if task in data.tasks},
        "checkpoints": entries,
        "problems": list(read.problems) if read else [],
        "config": loggable_config(cfg),
    }
    results["summary"] = summary_rows(entries)
    results["trends"] = trends(results["summary"])
    gradient_objective = str(cfg.gradient.objectives[0])
    files = make_plots(results, output_dir, gradient_objective) if cfg.plots else {}
    results["files"] = files
    results["seconds"] = round(time.perf_counter() - start, 2)
    results_path = write_results(output_dir, results)
    wandb_dir = log_to_trackers(cfg, results, files)
    # The W&B run directory is named by time and run id, so it is printed rather than kept in the results.
    print_summary(results, {**files, **({"wandb": wandb_dir} if wandb_dir else {})}, results_path)
    return results
