"""The `data` section (conf/data/default.yaml) as a typed config: which pairs a run uses and how they are split.
Every key comes from the YAML; a misspelt or missing one is one line naming the known ones."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from gradspace.utils.run_config import config_from_section


@dataclass
class DataConfig:
    source: str  # auto | synth | blimp | jsonl
    path: str | None  # source=jsonl: a BLiMP-format .jsonl file or a folder of them
    eval_fraction: float  # share of each task held out for evaluation
    reserve_fraction: float  # share of each task neither trained nor evaluated on (held-out text of real LMs)
    split_seed: int
    max_train_pairs_per_task: int | None
    max_eval_pairs_per_task: int | None
    eval_all_tasks: bool  # evaluate every task of the suite (transfer rows), not only the trained ones

    @classmethod
    def from_section(cls, section: Mapping) -> "DataConfig":
        return config_from_section(cls, section, "data")
