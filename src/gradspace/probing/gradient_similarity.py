"""Similarity of per-task gradients without keeping tasks × parameters numbers.

Each task's gradient is streamed in, one parameter tensor at a time, and reduced to
- a CountSketch per module group (a fixed sparse random projection: every coordinate is added, with a random
  sign, to one of `sketch_dim` buckets). Inner products of sketches estimate inner products of gradients with
  error about |x||y|/sqrt(sketch_dim). Hashes are drawn independently for every coordinate, so the sketch of a
  coarser group (a layer, a module kind, the whole model) is the sum of its groups' sketches;
- its top parameters by |gradient|: the top `top_fraction` of the whole model (for the overall overlap) and of
  each group (for per-module overlap), stored as sorted index arrays (at most `max_top_k` overall);
- exact squared norms per group.

Memory is O(tasks × groups × sketch_dim + tasks × top_fraction × parameters), next to the one gradient the model
holds while a task is processed.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

from gradspace.errors import GradspaceError

OVERALL = "overall"
KINDS = ("embedding", "attention", "mlp", "norm", "unembedding")
_LAYER = re.compile(r"\.(?:layers|h|layer|blocks)\.(\d+)\.")


def module_group(name: str) -> str:
    """The module group of a parameter: `embedding`, `unembedding`, `final_norm` or `layer<i>.<kind>` with kind
    attention, mlp or norm. Covers GPT-NeoX (Pythia), GPT-2 and Llama-style parameter names."""
    layer = _LAYER.search(f".{name}")
    lowered = name.lower()
    if layer is None:
        if any(key in lowered for key in ("embed_out", "lm_head")):
            return "unembedding"
        if any(key in lowered for key in ("embed", "wte", "wpe")):
            return "embedding"
        if "norm" in lowered or "ln_f" in lowered:
            return "final_norm"
        return "other"
    # Norms first: their names often mention the sublayer they sit before (`post_attention_layernorm`).
    if "norm" in lowered or ".ln_" in lowered:
        kind = "norm"
    elif any(key in lowered for key in ("attn", "attention")):
        kind = "attention"
    elif any(key in lowered for key in ("mlp", "feed_forward")):
        kind = "mlp"
    else:
        kind = "other"
    return f"layer{layer.group(1)}.{kind}"


def group_kind(group: str) -> str:
    """`layer3.mlp` -> `mlp`; `final_norm` -> `norm`; `embedding` -> `embedding`."""
    if group == "final_norm":
        return "norm"
    return group.split(".", 1)[1] if group.startswith("layer") else group


def group_layer(group: str) -> str | None:
    return group.split(".", 1)[0] if group.startswith("layer") else None


def _layer_sort_key(group: str) -> tuple:
    layer = group_layer(group)
    return (0, int(layer[5:])) if layer else (1, group)


@dataclass
class GradientSpaceConfig:
    sketch_dim: int = 8192
    top_fraction: float = 0.01  # share of parameters in each top set
    # Cap on the overall top set; the share shrinks to fit on large models, so 67 tasks' sets of a 410M model
    # take about a third of one float32 gradient copy (each group's set shrinks by the same share).
    max_top_k: int = 1_000_000
    seed: int = 0  # of the sketch's hashes; the same seed gives the same projection in every run
    chunk_size: int = 1 << 22  # parameters hashed at a time (bounds the temporary index tensors)

    def __post_init__(self) -> None:
        if self.sketch_dim < 1:
            raise GradspaceError(f"gradient sketch_dim={self.sketch_dim} must be positive; use e.g. 8192")
        if not 0.0 < self.top_fraction <= 1.0:
            raise GradspaceError(f"gradient top_fraction={self.top_fraction} must lie in (0, 1]; use e.g. 0.01")
        if self.max_top_k < 1:
            raise GradspaceError(f"gradient max_top_k={self.max_top_k} must be positive; use e.g. 1000000")


@dataclass
class _Parameter:
    name: str
    group: str
    numel: int
    offset: int  # in the whole model's flat index
    group_offset: int  # in its group's flat index


def _stable_seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256("\x00".join(map(str, parts)).encode()).digest()[:8], "big") >> 1


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    union = len(a) + len(b)
    if union == 0:
        return math.nan
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (union - inter)


class _RunningTopK:
    """Indices of the k largest values seen so far, kept on the values' device (only values > 0 count: a zero
    gradient is no evidence of a parameter's involvement)."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.values: torch.Tensor | None = None
        self.indices: torch.Tensor | None = None

    def update(self, values: torch.Tensor, offset: int) -> None:
        values = values.float()
        indices = torch.arange(offset, offset + values.numel(), device=values.device)
        if values.numel() > self.k:
            values, order = torch.topk(values, self.k, sorted=False)
            indices = indices[order]
        if self.values is not None:
            values = torch.cat([self.values, values.to(self.values.device)])
            indices = torch.cat([self.indices, indices.to(self.indices.device)])
            if values.numel() > self.k:
                values, order = torch.topk(values, self.k, sorted=False)
                indices = indices[order]
        self.values, self.indices = values, indices

    def sorted_indices(self) -> np.ndarray:
        if self.values is None:
            return np.empty(0, dtype=np.int32)
        kept = self.indices[self.values > 0].cpu().numpy()
        dtype = np.int32 if kept.size == 0 or kept.max() < 2**31 else np.int64
        return np.sort(kept).astype(dtype)


class GradientSpace:
    """Accumulates one gradient per task; gives cosine and top-k Jaccard matrices overall and per group."""

    def __init__(self, named_numels: Sequence[tuple[str, int]], config: GradientSpaceConfig | None = None) -> None:
        self.config = config or GradientSpaceConfig()
        self.parameters: dict[str, _Parameter] = {}
        group_sizes: dict[str, int] = {}
        offset = 0
        for name, numel in named_numels:
            group = module_group(name)
            self.parameters[name] = _Parameter(name, group, int(numel), offset, group_sizes.get(group, 0))
            group_sizes[group] = group_sizes.get(group, 0) + int(numel)
            offset += int(numel)
        if offset == 0:
            raise GradspaceError("the model has no trainable parameters to take gradients of")
        self.total = offset
        self.top_fraction = min(self.config.top_fraction, self.config.max_top_k / offset)
        self.groups = sorted(group_sizes, key=_layer_sort_key)
        self.group_sizes = group_sizes
        self.tasks: list[str] = []
        self._sketches: list[torch.Tensor] = []  # per task: [groups, sketch_dim]
        self._sq_norms: list[np.ndarray] = []  # per task: [groups]
        self._top_overall: list[np.ndarray] = []
        self._top_groups: list[dict[str, np.ndarray]] = []

    @classmethod
    def for_model(cls, model: torch.nn.Module, config: GradientSpaceConfig | None = None) -> "GradientSpace":
        return cls([(name, p.numel()) for name, p in model.named_parameters() if p.requires_grad], config)

    def _hashes(self, name: str, chunk: int, n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator(device=device).manual_seed(_stable_seed(self.config.seed, name, chunk))
        buckets = torch.randint(0, self.config.sketch_dim, (n,), generator=generator, device=device)
        signs = torch.randint(0, 2, (n,), generator=generator, device=device).mul_(2).sub_(1)
        return buckets, signs

    def add(self, task: str, gradients: Iterable[tuple[str, torch.Tensor | None]]) -> None:
        """Stream in one task's gradient as (parameter name, gradient) pairs; a None gradient counts as zero."""
        if task in self.tasks:
            raise ValueError(f"task {task} was already added")
        group_index = {group: i for i, group in enumerate(self.groups)}
        sketch = torch.zeros(len(self.groups), self.config.sketch_dim, dtype=torch.float64)
        sq_norms = np.zeros(len(self.groups))
        fraction = self.top_fraction
        top_overall = _RunningTopK(max(1, math.ceil(fraction * self.total)))
        top_groups = {group: _RunningTopK(max(1, math.ceil(fraction * size))) for group, size in self.group_sizes.items()}
        seen = set()
        for name, gradient in gradients:
            if name not in self.parameters:
                raise ValueError(f"gradient for unknown parameter {name}")
            seen.add(name)
            if gradient is None:
                continue
            parameter = self.parameters[name]
            flat = gradient.detach().reshape(-1)
            row = group_index[parameter.group]
            group_sketch = torch.zeros(self.config.sketch_dim, dtype=torch.float64, device=flat.device)
            for chunk, start in enumerate(range(0, flat.numel(), self.config.chunk_size)):
                values = flat[start : start + self.config.chunk_size].double()
                buckets, signs = self._hashes(name, chunk, values.numel(), values.device)
                group_sketch.index_add_(0, buckets, values * signs)
                magnitude = values.abs()
                top_overall.update(magnitude, parameter.offset + start)
                top_groups[parameter.group].update(magnitude, parameter.group_offset + start)
            sketch[row] += group_sketch.cpu()
            sq_norms[row] += float(flat.double().pow(2).sum())
        unseen = set(self.parameters) - seen
        if unseen:
            raise ValueError(f"no gradient given for {len(unseen)} parameter(s), e.g. {sorted(unseen)[0]}")
        self.tasks.append(task)
        self._sketches.append(sketch.float())  # summed in float64, stored in float32
        self._sq_norms.append(sq_norms)
        self._top_overall.append(top_overall.sorted_indices())
        self._top_groups.append({group: top.sorted_indices() for group, top in top_groups.items()})

    def levels(self) -> list[str]:
        """`overall`, each module kind present, each layer, each fine group."""
        kinds = [kind for kind in KINDS if any(group_kind(group) == kind for group in self.groups)]
        layers = list(dict.fromkeys(layer for layer in map(group_layer, self.groups) if layer))
        return [OVERALL, *kinds, *layers, *self.groups]

    def _members(self, level: str) -> list[str]:
        if level == OVERALL:
            return list(self.groups)
        members = [g for g in self.groups if level in (g, group_kind(g), group_layer(g))]
        if not members:
            raise ValueError(f"unknown level {level}; choose from {', '.join(self.levels())}")
        return members

    def cosine(self, level: str = OVERALL) -> np.ndarray:
        """Estimated cosine similarity between tasks' gradients restricted to a level (diagonal 1).

        The estimate divides sketch inner products by sketch norms (a ratio estimator: it stays in [-1, 1] and its
        errors partly cancel); a task whose gradient is zero on the level gets NaN.
        """
        rows = [self.groups.index(group) for group in self._members(level)]
        stacked = torch.stack([sketch[rows].double().sum(dim=0) for sketch in self._sketches])  # [tasks, sketch_dim]
        gram = (stacked @ stacked.T).numpy()
        norms = np.sqrt(np.diag(gram))
        with np.errstate(invalid="ignore", divide="ignore"):
            cosine = gram / np.outer(norms, norms)
        cosine[norms == 0, :] = np.nan
        cosine[:, norms == 0] = np.nan
        return np.clip(cosine, -1.0, 1.0)

    def jaccard(self, level: str = OVERALL) -> np.ndarray:
        """Jaccard overlap of the tasks' top-|gradient| parameter sets on a level (diagonal 1).

        `overall` ranks all parameters together; a group ranks its own; a coarser level (a layer, a module kind)
        takes the union of its groups' sets, so every group contributes the same share of its parameters.
        """
        if level == OVERALL:
            sets = self._top_overall
        else:
            members = self._members(level)
            # Group-local indices are made distinct by the group's position; sets of different groups never meet.
            sets = [
                np.concatenate([top[group].astype(np.int64) + (index << 40) for index, group in enumerate(members)])
                for top in self._top_groups
            ]
        n = len(sets)
        matrix = np.eye(n)
        for i in range(n):
            for j in range(i + 1, n):
                matrix[i, j] = matrix[j, i] = _jaccard(sets[i], sets[j])
        return matrix

    def state_bytes(self) -> int:
        """Bytes held for all tasks so far (sketches, norms, top sets): grows with tasks, not tasks × parameters."""
        per_task = [
            sketch.numel() * sketch.element_size() + sq.nbytes + top.nbytes + sum(t.nbytes for t in groups.values())
            for sketch, sq, top, groups in zip(self._sketches, self._sq_norms, self._top_overall, self._top_groups)
        ]
        return int(sum(per_task))

    def norms(self, level: str = OVERALL) -> dict[str, float]:
        """Exact gradient L2 norm of every task on a level."""
        rows = [self.groups.index(group) for group in self._members(level)]
        return {task: float(np.sqrt(sq[rows].sum())) for task, sq in zip(self.tasks, self._sq_norms)}
