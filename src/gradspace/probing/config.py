"""probe.yaml as typed, validated settings, built before any data is read or a model loads.

The sections other modules own (`model`, `task`, `data`, `paths`, `logger`) stay as composed and are checked where
they are used; every other key is a field here, so a misspelt one is one line naming the known ones.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

from omegaconf import DictConfig, ListConfig, OmegaConf

from gradspace.errors import GradspaceError
from gradspace.ftgd.config import whole_number
from gradspace.ftgd.objectives import check_objective
from gradspace.probing.gradient_similarity import GradientSpaceConfig
from gradspace.probing.granularity import check_granularity
from gradspace.utils.run_config import config_from_section
from gradspace.utils.seeding import check_seed

# Sections of probe.yaml read by the modules that own them (models/, data/, utils/), and Hydra's bookkeeping.
OWNED_ELSEWHERE = ("model", "task", "data", "paths", "logger", "task_name", "hydra")


def plain_value(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


@dataclass
class SourceConfig:
    """Where the transfer matrix comes from: fine-tuning here, a `train.py -m` sweep directory or a W&B group."""

    inprocess: bool
    multirun_dir: str | None
    wandb_group: str | None

    def __post_init__(self) -> None:
        if self.multirun_dir and self.wandb_group:
            raise GradspaceError("set only one of source.multirun_dir and source.wandb_group")


@dataclass
class TransferConfig:
    objective: str
    train_overrides: list[str]  # train.py overrides of every fine-tuning (its budget)
    side_effect_objectives: list[str]

    def __post_init__(self) -> None:
        self.train_overrides = [str(item) for item in self.train_overrides or []]
        self.side_effect_objectives = [str(item) for item in self.side_effect_objectives or []]
        for objective in (self.objective, *self.side_effect_objectives):
            check_objective(str(objective))


@dataclass
class GradientConfig:
    objectives: list[str]  # the first is the FTGD space drawn in the heatmaps
    max_pairs_per_task: int | None
    batch_size: int
    sketch_dim: int
    top_fraction: float
    max_top_k: int
    seed: int

    def __post_init__(self) -> None:
        self.objectives = [str(objective) for objective in self.objectives]
        for objective in self.objectives:
            check_objective(objective)
        whole_number(self.batch_size, "gradient.batch_size", 1)
        if self.max_pairs_per_task is not None:
            whole_number(self.max_pairs_per_task, "gradient.max_pairs_per_task", 1)

    def space_config(self) -> GradientSpaceConfig:
        return GradientSpaceConfig(sketch_dim=int(self.sketch_dim), top_fraction=float(self.top_fraction),
                                   max_top_k=int(self.max_top_k), seed=int(self.seed))

    def fingerprint_settings(self) -> dict:
        """What a task's gradient measurement depends on, for resuming (the objective is keyed separately)."""
        return {**asdict(self), "objectives": None}


@dataclass
class HypothesisConfig:
    n_permutations: int


@dataclass
class ProbeConfig:
    seed: int
    device: str  # where gradients are taken; fine-tuning follows train.py's trainer
    torch_threads: int | None
    progress: bool
    plots: bool
    resume: bool
    granularity: str  # paradigm | phenomenon
    revisions: list[str] | None
    models: list[str]  # more model configs probed at the same revisions
    source: SourceConfig
    transfer: TransferConfig
    gradient: GradientConfig
    hypothesis: HypothesisConfig

    def __post_init__(self) -> None:
        check_seed(self.seed)
        check_granularity(str(self.granularity))
        self.models = [str(name) for name in self.models or []]
        if self.revisions is not None:
            self.revisions = [str(revision) for revision in self.revisions]

    @classmethod
    def from_config(cls, cfg: DictConfig | Mapping[str, Any]) -> "ProbeConfig":
        # Section by section: the sections owned elsewhere may hold interpolations only a running app resolves.
        values = {key: plain_value(cfg[key]) for key in cfg if key not in OWNED_ELSEWHERE}
        sections = {"source": SourceConfig, "transfer": TransferConfig, "gradient": GradientConfig,
                    "hypothesis": HypothesisConfig}
        for name, section_class in sections.items():
            values[name] = config_from_section(section_class, values.get(name), name)
        known = [field.name for field in fields(cls)]
        unknown = [key for key in values if key not in known]
        if unknown:
            raise GradspaceError(f"{unknown[0]} is not a setting of probe.py; the known ones are "
                                 f"{', '.join([*known, *OWNED_ELSEWHERE[:-2]])}")
        return config_from_section(cls, values, "probe")
