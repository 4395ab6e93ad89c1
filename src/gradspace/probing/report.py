"""What `probe.py` shows of its results: heatmaps, dendrograms and the line plot over checkpoints, the W&B images
and tables, and the console summary. It reads the results dict `probing.run.run` builds and measures nothing."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from gradspace.probing import plots
from gradspace.probing.results import ProbeResults
from gradspace.utils.wandb_setup import finish_wandb, log_wandb_tables, loggers_from_config, wandb_logger_of

# The spaces every checkpoint gets a heatmap of; all but the Jaccard overlaps also get a dendrogram.
HEATMAP_SPACES = ("transfer_accuracy", "transfer_margin", "gradient_{objective}_cosine", "gradient_{objective}_jaccard")


def trend_series(rows: list[dict]) -> dict[str, dict[str, list]]:
    """Within − across per panel (transfer accuracy, transfer margin, gradient cosine, top-k overlap) and line
    (a model, and for gradient spaces its objective: FTGD differential vs LM baseline) over checkpoints."""
    series: dict[str, dict[str, list]] = {}
    for row in rows:
        match = re.fullmatch(r"gradient_(.+)_(cosine|jaccard)", row["space"])
        if match:
            panel = "gradient cosine" if match.group(2) == "cosine" else "top-k overlap (Jaccard)"
            line = f"{row['model']} {match.group(1)}"
        else:
            panel, line = display_name(row["space"]), row["model"]
        series.setdefault(f"{panel}: within − across", {}).setdefault(line, []).append((row["revision"], row["within_minus_across"]))
    return series


def make_plots(results: ProbeResults, output_dir: Path, objective: str) -> dict[str, str]:
    files: dict[str, str] = {}
    phenomena = results.phenomena
    wanted = [name.format(objective=objective) for name in HEATMAP_SPACES]
    for entry in results.checkpoints:
        tasks = entry["tasks"]
        slug = entry["checkpoint"].replace("/", "_").replace("@", "_")
        for name in wanted:
            space = entry["spaces"].get(name)
            if space is None:
                continue
            matrix = np.array([[np.nan if v is None else v for v in row] for row in space["matrix"]], dtype=float)
            h = space["hypothesis"]
            rho = "n/a" if h["spearman"] is None else f"{h['spearman']:.2f} (p={h['p_value']:.3f})"
            title = f"{entry['checkpoint']} {name}\nSpearman with same-phenomenon: {rho}"
            files[f"heatmap/{entry['checkpoint']}/{name}"] = str(plots.heatmap(
                matrix, tasks, phenomena, title, output_dir / "plots" / f"heatmap_{slug}_{name}.png",
                diverging=not name.endswith("jaccard"), value_label=name))
            if not name.endswith("jaccard"):
                files[f"dendrogram/{entry['checkpoint']}/{name}"] = str(plots.dendrogram(
                    matrix, tasks, phenomena, f"{entry['checkpoint']} {name}", output_dir / "plots" / f"dendrogram_{slug}_{name}.png"))
    series = trend_series(results.summary)
    files["checkpoints"] = str(plots.checkpoint_lines(series, "task-space structure over checkpoints", output_dir / "plots" / "checkpoints.png"))
    return files


def log_to_trackers(cfg: DictConfig, results: ProbeResults, files: dict[str, str]) -> str | None:
    """The summary scalars into every configured tracker; images and tables into the W&B run (offline unless
    credentials), whose directory is returned."""
    loggers = loggers_from_config(cfg, default_name=f"probe-{cfg.model.name}", tags=["probe", str(cfg.model.name)])
    scalars = {f"probe/{row['checkpoint']}/{row['space']}/{measure}": row[measure]
               for row in results.summary for measure in ("within_minus_across", "spearman") if row.get(measure) is not None}
    for logger in loggers:
        logger.log_metrics(scalars)
        logger.save()
    logger = wandb_logger_of(loggers)
    if logger is None:
        return None
    tables = {f"probe/matrix/{entry['checkpoint']}/{name}": (["task", *entry["tasks"]],
                                                             [[task, *row] for task, row in zip(entry["tasks"], space["matrix"])])
              for entry in results.checkpoints for name, space in entry["spaces"].items()}
    summary = results.summary
    tables["probe/summary"] = (list(summary[0]), [list(row.values()) for row in summary])
    log_wandb_tables(logger, tables, images={f"probe/{key}": path for key, path in files.items()})
    directory = getattr(logger.experiment, "dir", None)
    finish_wandb()
    return directory


def display_name(space: str) -> str:
    """`gradient_diff_cosine` -> `diff cosine`, `transfer_accuracy` -> `transfer accuracy`."""
    return space.removeprefix("gradient_").replace("_", " ")


def print_summary(results: ProbeResults, files: dict[str, str], results_path: Path) -> None:
    def fmt(value, spec=".3f"):
        return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)

    console = Console(width=max(Console().width, 110))
    accuracy = Table(title="minimal-pair accuracy of each checkpoint (held-out pairs)")
    accuracy.add_column("task", no_wrap=True)
    for entry in results.checkpoints:
        accuracy.add_column(entry["checkpoint"], justify="right")
    for task in results.tasks:
        accuracy.add_row(task, *(fmt(entry["evaluation"]["tasks"][task]["accuracy"]) for entry in results.checkpoints))
    accuracy.add_row("all", *(fmt(entry["evaluation"]["overall"]["accuracy"]) for entry in results.checkpoints))
    accuracy.add_row("pairs/s", *(fmt(entry["evaluation"]["pairs_per_second"], ".0f") for entry in results.checkpoints))
    console.print(accuracy)
    table = Table(title=f"task space vs same-phenomenon hypothesis ({len(results.tasks)} tasks, "
                        f"{len(set(results.phenomena.values()))} phenomena)")
    for column in ("checkpoint", "space", "within", "across", "within−across", "Spearman", "p"):
        table.add_column(column, justify="left" if column in ("checkpoint", "space") else "right", no_wrap=True)
    for row in results.summary:
        table.add_row(row["checkpoint"], display_name(row["space"]), fmt(row["within"]), fmt(row["across"]),
                      fmt(row["within_minus_across"], "+.3f"), fmt(row["spearman"], "+.2f"), fmt(row["p_value"]))
    console.print(table)
    if any(len(trend["revisions"]) > 1 for trend in results.trends):
        change = Table(title="change over checkpoints (within − across; Spearman)")
        for column in ("model", "space", "revisions", "within−across", "Spearman"):
            change.add_column(column, no_wrap=True)
        for trend in results.trends:
            change.add_row(trend["model"], display_name(trend["space"]), " → ".join(trend["revisions"]),
                           " → ".join(fmt(v, "+.3f") for v in trend["within_minus_across"]),
                           " → ".join(fmt(v, "+.2f") for v in trend["spearman"]))
        console.print(change)
    for problem in results.problems:
        console.print(f"[yellow]missing:[/yellow] {problem}")
    console.print(f"results: {results_path}")
    for key, path in files.items():
        console.print(f"{key}: {path}", soft_wrap=True)
