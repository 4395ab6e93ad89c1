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
holds while a task is processed and the sketch's hashes (4 bytes a parameter, drawn once, shared by all tasks).
Cost per task is a few passes over the gradient (SmolLM2-135M: about 3 s on one busy CPU thread).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from scipy.sparse import csr_matrix

from gradspace.errors import GradspaceError
from gradspace.models.architecture import MODULE_KINDS, group_kind, group_layer, layer_sort_key, module_group

OVERALL = "overall"


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


def pairwise_intersections(sets: Sequence[np.ndarray], size: int) -> np.ndarray:
    """|A_i ∩ A_j| of index sets (unique indices below `size`) for all pairs at once: a sparse task × index
    incidence matrix times its transpose (one pass, where pairwise set intersections would take n² of them)."""
    lengths = np.array([len(indices) for indices in sets], dtype=np.int64)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    indices = np.concatenate([np.asarray(indices, dtype=np.int64) for indices in sets]) if len(sets) else np.empty(0, np.int64)
    incidence = csr_matrix((np.ones(len(indices), dtype=np.int32), indices, indptr), shape=(len(sets), max(1, size)))
    return np.asarray((incidence @ incidence.T).toarray(), dtype=np.int64)


class _TopSet:
    """The indices of the k largest |gradient| values of one set of parameters (the whole model, or one group),
    found in two passes over its chunks: a sample of every chunk gives a threshold that about 1.25 k values clear,
    and only the values above it are ranked. Only values > 0 count: a zero gradient is no evidence of a parameter's
    involvement. Exact whatever the sample: when fewer than k values clear the threshold, it drops to the sample's
    value at four times the rank and the set is collected again, down to "any value > 0" at the end. The sample's
    positions are random (a fixed seed): a regular stride falls on the same columns of every row of a matrix whose
    width divides it (Gemma-3's 640-wide embedding at a stride of 2560 saw column 0 alone, misjudged the tail and
    collected every value of the 168M-parameter matrix at the threshold 0, 11 GB)."""

    SAMPLE = 1 << 16  # values sampled per set, over all its chunks

    def __init__(self, k: int, size: int) -> None:
        self.k = k
        self.stride = max(1, size // self.SAMPLE)
        self.generator = torch.Generator().manual_seed(0)
        self.samples: list[torch.Tensor] = []
        self.sample_values = torch.empty(0)
        self.rank = 0
        self.size = size
        self.threshold = 0.0
        self.values: list[torch.Tensor] = []
        self.indices: list[torch.Tensor] = []

    def sample(self, magnitude: torch.Tensor) -> None:
        if self.stride == 1:
            self.samples.append(magnitude.float().cpu())
            return
        count = -(-magnitude.numel() // self.stride)
        positions = torch.randint(0, magnitude.numel(), (count,), generator=self.generator)
        self.samples.append(magnitude[positions.to(magnitude.device)].float().cpu())

    def fix_threshold(self) -> None:
        """The sample value above which about 1.25 k values of the set are expected (plus three standard errors)."""
        self.sample_values = torch.cat(self.samples) if self.samples else torch.empty(0)
        self.samples = []
        expected = self.k * self.sample_values.numel() / max(1, self.size)
        self._set_rank(math.ceil(1.25 * expected + 3 * math.sqrt(expected) + 1))

    def _set_rank(self, rank: int) -> None:
        self.rank = rank
        within = 0 < rank < self.sample_values.numel()
        self.threshold = float(torch.topk(self.sample_values, rank).values[-1]) if within else 0.0

    def collect(self, values: torch.Tensor, indices: torch.Tensor) -> None:
        """Keep the given values (and their indices in the set) that clear this set's threshold."""
        if self.threshold > 0:
            keep = values >= self.threshold
            values, indices = values[keep], indices[keep]
        self.values.append(values.float())
        self.indices.append(indices)

    def enough(self) -> bool:
        return self.threshold == 0.0 or sum(v.numel() for v in self.values) >= self.k

    def lower_threshold(self) -> None:
        """Too few values cleared the threshold: start again from the sample's value at four times the rank."""
        self._set_rank(4 * self.rank)
        self.values, self.indices = [], []

    def sorted_indices(self) -> np.ndarray:
        if not self.values:
            return np.empty(0, dtype=np.int32)
        values, indices = torch.cat(self.values), torch.cat(self.indices)
        if values.numel() > self.k:
            indices = indices[torch.topk(values, self.k, sorted=False).indices]
        kept = indices.cpu().numpy()
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
        self.groups = sorted(group_sizes, key=layer_sort_key)
        self.group_sizes = group_sizes
        self.tasks: list[str] = []
        self._sketches: list[torch.Tensor] = []  # per task: [groups, sketch_dim]
        self._sq_norms: list[np.ndarray] = []  # per task: [groups]
        self._top_overall: list[np.ndarray] = []
        self._top_groups: list[dict[str, np.ndarray]] = []
        # Per (parameter, chunk): the signed bucket of every coordinate, bucket + sketch_dim where its sign is -1,
        # drawn once and reused by every task (4 bytes a parameter: drawing them was most of a sketch's cost).
        self._signed_buckets: dict[tuple[str, int], torch.Tensor] = {}
        self._intersection_cache: dict[str, tuple[int, np.ndarray]] = {}

    @classmethod
    def for_model(cls, model: torch.nn.Module, config: GradientSpaceConfig | None = None) -> "GradientSpace":
        return cls([(name, p.numel()) for name, p in model.named_parameters() if p.requires_grad], config)

    def _hashes(self, name: str, chunk: int, n: int, device) -> torch.Tensor:
        key = (name, chunk)
        if key not in self._signed_buckets:
            dim = self.config.sketch_dim
            generator = torch.Generator(device=device).manual_seed(_stable_seed(self.config.seed, name, chunk))
            buckets = torch.randint(0, dim, (n,), generator=generator, device=device)
            signs = torch.randint(0, 2, (n,), generator=generator, device=device)
            self._signed_buckets[key] = buckets.add_(signs.mul_(dim)).int()
        return self._signed_buckets[key]

    def _chunks(self, gradients: list[tuple[str, torch.Tensor]]) -> Iterator[tuple[_Parameter, int, int, torch.Tensor]]:
        """(parameter, chunk number, start, |values| or values) over every given gradient, chunk by chunk."""
        for name, gradient in gradients:
            flat = gradient.detach().reshape(-1)
            for chunk, start in enumerate(range(0, flat.numel(), self.config.chunk_size)):
                yield self.parameters[name], chunk, start, flat[start : start + self.config.chunk_size]

    def add(self, task: str, gradients: Iterable[tuple[str, torch.Tensor | None]]) -> None:
        """Stream in one task's gradient as (parameter name, gradient) pairs; a None gradient counts as zero.

        The gradients are read twice (sketch, norms and a sample of magnitudes; then the top sets), so they must
        stay unchanged until this returns.
        """
        if task in self.tasks:
            raise ValueError(f"task {task} was already added")
        gradients = list(gradients)
        unknown = [name for name, _ in gradients if name not in self.parameters]
        if unknown:
            raise ValueError(f"gradient for unknown parameter {unknown[0]}")
        unseen = set(self.parameters) - {name for name, _ in gradients}
        if unseen:
            raise ValueError(f"no gradient given for {len(unseen)} parameter(s), e.g. {sorted(unseen)[0]}")
        present = [(name, gradient) for name, gradient in gradients if gradient is not None]
        dim = self.config.sketch_dim
        group_index = {group: i for i, group in enumerate(self.groups)}
        sketch = torch.zeros(len(self.groups), dim, dtype=torch.float64)
        sq_norms = np.zeros(len(self.groups))
        fraction = self.top_fraction
        top_overall = _TopSet(max(1, math.ceil(fraction * self.total)), self.total)
        top_groups = {group: _TopSet(max(1, math.ceil(fraction * size)), size) for group, size in self.group_sizes.items()}
        for parameter, chunk, start, values in self._chunks(present):
            row = group_index[parameter.group]
            # Float32 within a chunk (its sum of squares and bucket sums), float64 across chunks.
            signed = torch.zeros(2 * dim, dtype=torch.float32, device=values.device)
            signed.index_add_(0, self._hashes(parameter.name, chunk, values.numel(), values.device), values.float())
            sketch[row] += (signed[:dim] - signed[dim:]).double().cpu()
            sq_norms[row] += float(torch.dot(values.float(), values.float()))
            magnitude = values.abs()
            top_overall.sample(magnitude)
            top_groups[parameter.group].sample(magnitude)
        for top in (top_overall, *top_groups.values()):
            top.fix_threshold()
        self._collect(present, top_overall, top_groups)
        retry = [top for top in (top_overall, *top_groups.values()) if not top.enough()]
        while retry:
            for top in retry:
                top.lower_threshold()
            self._collect(present, top_overall if top_overall in retry else None,
                          {group: top for group, top in top_groups.items() if top in retry})
            retry = [top for top in retry if not top.enough()]
        self.tasks.append(task)
        self._sketches.append(sketch.float())  # summed in float64, stored in float32
        self._sq_norms.append(sq_norms)
        self._top_overall.append(top_overall.sorted_indices())
        self._top_groups.append({group: top.sorted_indices() for group, top in top_groups.items()})

    def _collect(self, gradients, top_overall: _TopSet | None, top_groups: dict[str, _TopSet]) -> None:
        for parameter, _, start, values in self._chunks(gradients):
            tops = [(top, offset) for top, offset in ((top_overall, parameter.offset), (top_groups.get(parameter.group), parameter.group_offset))
                    if top is not None]
            if not tops:
                continue
            # One pass over the chunk at the lower threshold; each set then filters the few values that cleared it.
            magnitude = values.abs()
            lowest = min(top.threshold for top, _ in tops)
            where = (magnitude >= lowest if lowest > 0 else magnitude > 0).nonzero().squeeze(1)
            cleared = magnitude[where]
            for top, offset in tops:
                top.collect(cleared, where + (offset + start))

    # --- one task's measurements as plain arrays, so a probe can save each task as it finishes and resume ---------

    def task_state(self, task: str) -> dict:
        index = self.tasks.index(task)
        return {"task": task, "groups": list(self.groups), "total": self.total, "top_fraction": self.top_fraction,
                "sketch": self._sketches[index].numpy(), "sq_norms": self._sq_norms[index],
                "top_overall": self._top_overall[index], "top_groups": self._top_groups[index]}

    def add_state(self, state: dict) -> None:
        """Add a task from `task_state` of a space with the same parameters and configuration."""
        if state["groups"] != list(self.groups) or state["total"] != self.total or state["top_fraction"] != self.top_fraction:
            raise ValueError("the saved task state comes from a different model or gradient configuration")
        if state["task"] in self.tasks:
            raise ValueError(f"task {state['task']} was already added")
        self.tasks.append(state["task"])
        self._sketches.append(torch.as_tensor(np.asarray(state["sketch"], dtype=np.float32)))
        self._sq_norms.append(np.asarray(state["sq_norms"], dtype=float))
        self._top_overall.append(np.asarray(state["top_overall"]))
        self._top_groups.append({group: np.asarray(top) for group, top in state["top_groups"].items()})

    def levels(self) -> list[str]:
        """`overall`, each module kind present, each layer, each fine group."""
        kinds = [kind for kind in MODULE_KINDS if any(group_kind(group) == kind for group in self.groups)]
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
        takes the union of its groups' sets, so every group contributes the same share of its parameters. Sets of
        different groups never meet, so a level's intersections are the sums of its groups' (each counted once).
        """
        if level == OVERALL:
            counts, sizes = self._intersections(OVERALL), np.array([len(top) for top in self._top_overall])
        else:
            members = self._members(level)
            counts = sum(self._intersections(group) for group in members)
            sizes = np.array([sum(len(top[group]) for group in members) for top in self._top_groups])
        union = sizes[:, None] + sizes[None, :] - counts
        with np.errstate(invalid="ignore", divide="ignore"):
            matrix = np.where(union > 0, counts / np.maximum(union, 1), np.nan)
        np.fill_diagonal(matrix, 1.0)
        return matrix

    def _intersections(self, key: str) -> np.ndarray:
        """|top set i ∩ top set j| for all task pairs, overall or of one group; kept until a task is added."""
        cached = self._intersection_cache.get(key)
        if cached is not None and cached[0] == len(self.tasks):
            return cached[1]
        if key == OVERALL:
            sets, size = self._top_overall, self.total
        else:
            sets, size = [top[key] for top in self._top_groups], self.group_sizes[key]
        counts = pairwise_intersections(sets, size)
        self._intersection_cache[key] = (len(self.tasks), counts)
        return counts

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
