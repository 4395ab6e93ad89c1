"""EleutherAI delphi's latent cache, read and written without delphi (`feature=delphi`, `delphi.write_cache`).

delphi (`eai-delphi`, `delphi/latents/cache.py: LatentCache.save_splits, save_config`) lays a cache out as

    <latents dir>/<hookpoint>/<start>_<end>.safetensors   one file per range of latents, `end` inclusive
    <latents dir>/<hookpoint>/config.json                 its CacheConfig as a dict, plus "model_name"

and each file holds `locations` [n, 3] (sequence, position, latent − start; uint16 where every value fits, else
uint32), `activations` [n] (float16; only |activation| > 1e-5 is stored) and `tokens` [sequences, cache_ctx_len]
(the whole token array, the same in every file). Its loader (`latents/loader.py: TensorBuffer.load`) adds `start`
back from the file name, and its constructor (`latents/constructors.py`) cuts the token array into windows of
`example_ctx_len` (32) tokens: a latent's activating examples are the windows it fires in, ordered by their largest
activation, and its non-activating examples random windows where it does not fire; its sampler
(`latents/samplers.py: split_quantiles`) cuts the activating windows into `n_quantiles` equal slices from the
strongest down and draws the same number from each. `latent_windows` does the same, with the draws disjoint.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from gradspace.errors import GradspaceError
from gradspace.labeling.features import FeatureData
from gradspace.labeling.prompts import Example
from gradspace.labeling.vocabulary import word_tokens

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
# delphi stores only activations whose magnitude exceeds this (cache.py: `latents.abs() > 1e-5`).
STORED_ABOVE = 1e-5


@dataclass
class LatentActivations:
    """One latent's stored activations: flat token indices (sequence * cache_ctx_len + position) and values."""

    flat: torch.Tensor  # [n] long
    values: torch.Tensor  # [n] float32


@dataclass
class DelphiCache:
    """One hookpoint of a cache: the token array, the config, the latent width the files cover, and per latent read
    its activations."""

    directory: Path  # <latents dir>/<hookpoint>
    hookpoint: str
    tokens: torch.Tensor  # [sequences, cache_ctx_len] long
    config: dict
    width: int  # one past the last latent of the last file
    latents: dict[int, LatentActivations] = field(default_factory=dict)

    @property
    def model_name(self) -> str | None:
        return self.config.get("model_name")


def _fail(path: Path, problem: str) -> GradspaceError:
    return GradspaceError(f"{path}: {problem}; write the delphi cache again")


def hookpoint_directory(path: str | Path, hookpoint: str | None) -> tuple[Path, str]:
    """The cache's directory for `hookpoint`: `path` may be the latents directory (holding one folder per hookpoint),
    delphi's run directory (holding `latents/`), or the hookpoint's own folder; without a hookpoint, the only one."""
    root = Path(str(path)).expanduser()
    if not root.is_dir():
        raise GradspaceError(f"feature.path={root} is not a directory; point it at a delphi latent cache (the folder with "
                             f"one folder per hookpoint, or delphi's run folder holding latents/)")
    if (root / "latents").is_dir():
        root = root / "latents"
    if any(root.glob("*.safetensors")) or (root / CONFIG_FILE).is_file():  # the hookpoint's own folder
        if hookpoint is not None and hookpoint != root.name:
            raise GradspaceError(f"feature.path={root} is the folder of hookpoint '{root.name}', not of feature.hookpoint={hookpoint}")
        return root, root.name
    hookpoints = sorted(p.name for p in root.iterdir() if p.is_dir())
    if hookpoint is None:
        if len(hookpoints) != 1:
            raise GradspaceError(f"{root} holds {len(hookpoints)} hookpoints ({', '.join(hookpoints) or 'none'}); "
                                 f"name one with feature.hookpoint=<name>")
        hookpoint = hookpoints[0]
    if hookpoint not in hookpoints:
        raise GradspaceError(f"{root} has no hookpoint '{hookpoint}' (it has {', '.join(hookpoints) or 'none'}); fix feature.hookpoint")
    return root / hookpoint, hookpoint


def split_files(directory: Path) -> list[tuple[int, int, Path]]:
    """(start, end, path) of each `<start>_<end>.safetensors`, by start; ranges must not overlap."""
    files = []
    for path in directory.glob("*.safetensors"):
        parts = path.stem.split("_")
        if len(parts) != 2 or not all(p.isdigit() for p in parts) or int(parts[0]) > int(parts[1]):
            raise _fail(path, "the file name is not <first latent>_<last latent>.safetensors")
        files.append((int(parts[0]), int(parts[1]), path))
    if not files:
        raise _fail(directory, "no <start>_<end>.safetensors files")
    files.sort()
    for (_, end, previous), (start, _, path) in zip(files, files[1:]):
        if start <= end:
            raise _fail(path, f"its latents overlap those of {previous.name}")
    return files


def read_config(directory: Path) -> dict:
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise _fail(path, "missing")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise _fail(path, f"not readable as JSON ({err})") from None
    if not isinstance(config, dict):
        raise _fail(path, f"holds a JSON {type(config).__name__}, not an object")
    return config


def _load(path: Path) -> dict[str, np.ndarray]:
    try:
        return load_file(str(path))
    except (OSError, SafetensorError, ValueError) as err:
        raise _fail(path, f"not readable as safetensors ({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None


def _check_split(path: Path, data: Mapping[str, np.ndarray], start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
    for key in ("locations", "activations"):
        if key not in data:
            raise _fail(path, f"no '{key}' tensor (it has {', '.join(sorted(data)) or 'none'})")
    locations, activations = data["locations"], data["activations"]
    if locations.ndim != 2 or locations.shape[1] != 3 or locations.dtype.kind not in "iu":
        raise _fail(path, f"'locations' must be integers of shape [n, 3], got {locations.dtype} {list(locations.shape)}")
    if activations.ndim != 1 or activations.shape[0] != locations.shape[0] or activations.dtype.kind != "f":
        raise _fail(path, f"'activations' must be floats of shape [{locations.shape[0]}] (one per location), got "
                          f"{activations.dtype} {list(activations.shape)}")
    if len(locations) and (int(locations.min()) < 0 or int(locations[:, 2].max()) > end - start):
        raise _fail(path, f"a location's latent lies outside the file's range {start}..{end}")
    if not np.isfinite(activations).all():
        raise _fail(path, "'activations' hold NaN or infinite values")
    return locations, activations


def read_cache(path: str | Path, hookpoint: str | None = None, latents: Sequence[int] | None = None) -> DelphiCache:
    """The cache at `path` for `hookpoint`, with the activations of `latents` (None: every latent of every file)."""
    directory, hookpoint = hookpoint_directory(path, hookpoint)
    config = read_config(directory)
    files = split_files(directory)
    width = files[-1][1] + 1
    wanted = None if latents is None else sorted({int(i) for i in latents})
    if wanted is not None:
        outside = [i for i in wanted if not any(start <= i <= end for start, end, _ in files)]
        if outside:
            raise GradspaceError(f"latents {outside} are in no file of {directory} (its files cover "
                                 f"{', '.join(f'{s}..{e}' for s, e, _ in files)}); fix feature.ids")
    tokens, token_file = None, None
    per_latent: dict[int, tuple[list, list]] = {}
    for start, end, file in files:
        needed = wanted is None or any(start <= i <= end for i in wanted)
        if not needed and tokens is not None:
            continue
        data = _load(file)
        locations, activations = _check_split(file, data, start, end)
        if "tokens" in data:
            file_tokens = data["tokens"]
            if file_tokens.ndim != 2 or file_tokens.dtype.kind not in "iu" or 0 in file_tokens.shape:
                raise _fail(file, f"'tokens' must be integers of shape [sequences, cache_ctx_len], got "
                                  f"{file_tokens.dtype} {list(file_tokens.shape)}")
            if tokens is None:
                tokens, token_file = torch.from_numpy(file_tokens.astype(np.int64)), file
            elif tuple(file_tokens.shape) != tuple(tokens.shape):
                raise _fail(file, f"its tokens {list(file_tokens.shape)} differ from those of {token_file.name} {list(tokens.shape)}")
        if not needed:
            continue
        locations = locations.astype(np.int64)
        latent_ids = locations[:, 2] + start
        for latent in (np.unique(latent_ids) if wanted is None else [i for i in wanted if start <= i <= end]):
            mask = latent_ids == latent
            per_latent[int(latent)] = (locations[mask, :2], activations[mask].astype(np.float32))
    if tokens is None:
        raise _fail(directory, "no file holds 'tokens' (written with save_tokens=False); gradspace needs the text")
    sequences, ctx_len = tokens.shape
    for latent, (locations, _) in per_latent.items():
        if len(locations) and (int(locations[:, 0].max()) >= sequences or int(locations[:, 1].max()) >= ctx_len):
            raise GradspaceError(f"{directory}: latent {latent} has locations outside the token array "
                                 f"[{sequences}, {ctx_len}]; the files are not one cache")
    cache = DelphiCache(directory, hookpoint, tokens, config, width)
    every = [i for start, end, _ in files for i in range(start, end + 1)]
    for latent in (wanted if wanted is not None else every):
        locations, values = per_latent.get(latent, (np.zeros((0, 2), np.int64), np.zeros(0, np.float32)))
        flat = torch.from_numpy(locations[:, 0] * ctx_len + locations[:, 1])
        order = torch.argsort(flat, stable=True)
        cache.latents[latent] = LatentActivations(flat[order], torch.from_numpy(values)[order])
    return cache


def check_tokens(cache: DelphiCache, vocabulary: int, model_name: str) -> None:
    """The cache's tokens must be the labelling model's: a larger id than its vocabulary is another tokenizer's."""
    largest = int(cache.tokens.max())
    if largest >= vocabulary:
        raise GradspaceError(f"{cache.directory}: token id {largest} is outside {model_name}'s vocabulary of {vocabulary}; the "
                             f"cache was written with another tokenizer ({cache.model_name}): label it with that model")


# --- writing -----------------------------------------------------------------------------------------------------


def cache_config(model_name: str, ctx_len: int, n_tokens: int, n_splits: int, dataset: str, batch_size: int = 32) -> dict:
    """config.json as delphi's `LatentCache.save_config` writes it: `CacheConfig.to_dict()` and the model's name."""
    return {"dataset_repo": dataset, "dataset_split": "train", "dataset_name": "", "dataset_column": "text",
            "batch_size": batch_size, "cache_ctx_len": ctx_len, "n_tokens": n_tokens, "n_splits": n_splits,
            "model_name": model_name}


def write_cache(directory: str | Path, hookpoint: str, tokens: torch.Tensor, locations: torch.Tensor, activations: torch.Tensor,
                width: int, n_splits: int, config: Mapping) -> Path:
    """Write one hookpoint's cache exactly as `LatentCache.save_splits` and `save_config` do: `n_splits` files over
    the latent range [0, width) cut by `linspace`, float16 activations, locations as uint16 where every value fits
    (else uint32), the whole token array in each file; config.json last, so a folder with a config is complete.
    `locations` [n, 3] are (sequence, position, latent); `directory` is the latents folder."""
    out = Path(str(directory)).expanduser() / hookpoint
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).unlink(missing_ok=True)
    boundaries = torch.linspace(0, width, steps=n_splits + 1).long()
    token_array = tokens.to(torch.int64).numpy()
    for start, end in zip(boundaries[:-1].tolist(), (boundaries[1:] - 1).tolist()):
        mask = (locations[:, 2] >= start) & (locations[:, 2] <= end)
        split_locations = locations[mask].numpy().copy()
        split_locations[:, 2] -= start
        fits = len(split_locations) == 0 or (split_locations[:, 2].max() < 2**16 and split_locations[:, 0].max() < 2**16)
        split_locations = split_locations.astype(np.uint16 if fits else np.uint32)
        save_file({"locations": split_locations, "activations": activations[mask].half().numpy(), "tokens": token_array},
                  str(out / f"{start}_{end}.safetensors"))
    with open(out / CONFIG_FILE, "w") as handle:
        json.dump(dict(config), handle, indent=4)
    return out


def pack_codes(codes: Sequence[tuple[list[int], torch.Tensor]], ctx_len: int, separator: int | None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-text token ids and SAE codes (gradspace's `sae_codes`: each text encoded on its own) packed into delphi's
    token array: the texts one after another (`separator` between them, as delphi's tokenized datasets join
    documents with EOS), cut into rows of `ctx_len` with the incomplete last row dropped. Returns (tokens
    [sequences, ctx_len], locations [n, 3], activations [n]); only |activation| > 1e-5 is kept, as delphi keeps."""
    stream: list[int] = []
    flat_positions, latent_ids, values = [], [], []
    for ids, text_codes in codes:
        sparse = text_codes.coalesce() if text_codes.is_sparse else text_codes.to_sparse().coalesce()
        indices, vals = sparse.indices(), sparse.values().float()
        keep = vals.abs() > STORED_ABOVE
        flat_positions.append(indices[0, keep] + len(stream))
        latent_ids.append(indices[1, keep])
        values.append(vals[keep])
        stream.extend(int(t) for t in ids)
        if separator is not None:
            stream.append(int(separator))
    sequences = len(stream) // ctx_len
    if sequences == 0:
        raise GradspaceError(f"the corpus holds {len(stream)} tokens, fewer than one row of delphi.cache_ctx_len={ctx_len}; "
                             f"lower it or give a larger corpus")
    tokens = torch.tensor(stream[: sequences * ctx_len], dtype=torch.long).view(sequences, ctx_len)
    flat = torch.cat(flat_positions) if flat_positions else torch.zeros(0, dtype=torch.long)
    latent = torch.cat(latent_ids) if latent_ids else torch.zeros(0, dtype=torch.long)
    value = torch.cat(values) if values else torch.zeros(0)
    inside = flat < sequences * ctx_len
    flat, latent, value = flat[inside], latent[inside], value[inside]
    # delphi's order: by sequence, position, then latent (torch.nonzero over [batch, seq, latent])
    order = torch.argsort(flat * (int(latent.max()) + 1 if len(latent) else 1) + latent, stable=True)
    flat, latent, value = flat[order], latent[order], value[order]
    locations = torch.stack([flat // ctx_len, flat % ctx_len, latent], dim=1)
    return tokens, locations, value


# --- delphi's examples ---------------------------------------------------------------------------------------------


@dataclass
class Window:
    """A window of `example_ctx_len` tokens: its tokens, the latent's activation on each, and for an activating
    window its quantile (0 = the strongest slice), for a non-activating one -1."""

    index: int  # the window's index in the cache's token array cut into windows
    tokens: list[int]
    activations: list[float]
    quantile: int

    @property
    def activating(self) -> bool:
        return self.quantile >= 0

    @property
    def peak(self) -> int:
        """The position of the largest activation (an activating window's example token)."""
        return max(range(len(self.activations)), key=lambda i: (self.activations[i], -i))


@dataclass
class LatentWindows:
    """One latent's windows, disjoint, each class in three parts: the label is fitted on `train`, its decision
    boundary set on `validation`, and it is scored on `test` (delphi's scorer examples)."""

    latent: int
    activating: dict[str, list[Window]]
    non_activating: dict[str, list[Window]]
    n_activating_windows: int  # all windows the latent fires in
    density: float  # the share of the cache's tokens it fires on
    hookpoint: str = ""


PARTS = ("test", "validation", "train")


def windows_of(cache: DelphiCache, example_ctx_len: int) -> torch.Tensor:
    """The token array cut into windows [n_windows, example_ctx_len], as delphi's constructor reshapes it."""
    total = cache.tokens.numel()
    if total % example_ctx_len:
        raise GradspaceError(f"{cache.directory}: its {total} tokens do not cut into windows of feature.example_ctx_len="
                             f"{example_ctx_len}; use a length that divides cache_ctx_len={cache.tokens.shape[1]}")
    return cache.tokens.reshape(-1, example_ctx_len)


def activating_windows(cache: DelphiCache, latent: int, example_ctx_len: int) -> list[Window]:
    """Every window the latent fires in (stored activation > 0), strongest first by its largest activation, as
    delphi's `pool_max_activation_windows` orders them (ties: the earlier window)."""
    data = cache.latents[latent]
    positive = data.values > 0
    flat, values = data.flat[positive], data.values[positive]
    if not len(flat):
        return []
    window_ids = flat // example_ctx_len
    unique, inverse = torch.unique(window_ids, return_inverse=True)
    acts = torch.zeros(len(unique), example_ctx_len)
    acts[inverse, flat % example_ctx_len] = values
    order = sorted(range(len(unique)), key=lambda i: (-float(acts[i].max()), int(unique[i])))
    reshaped = windows_of(cache, example_ctx_len)
    return [Window(int(unique[i]), reshaped[int(unique[i])].tolist(), acts[i].tolist(), 0) for i in order]


def latent_windows(cache: DelphiCache, latent: int, example_ctx_len: int, n_quantiles: int, counts: Mapping[str, int],
                   seed: int) -> LatentWindows:
    """delphi's sampling, with the parts disjoint: the activating windows (strongest first) cut into `n_quantiles`
    slices of equal size (the remainder, the weakest, left out as delphi leaves it), and from each slice
    counts[part] / n_quantiles windows per part drawn at random; as many non-activating windows per part, drawn at
    random from the windows where the latent does not fire (one order of windows for every latent, so latents share
    their non-activating windows as delphi's fixed seed makes them share)."""
    reshaped = windows_of(cache, example_ctx_len)
    windows = activating_windows(cache, latent, example_ctx_len)
    per_quantile = {part: counts[part] // n_quantiles for part in PARTS}
    need = sum(per_quantile.values())
    size = len(windows) // n_quantiles
    if size < need:
        raise GradspaceError(
            f"latent {latent} fires in {len(windows)} windows of {example_ctx_len} tokens of {cache.directory}, fewer than "
            f"{need * n_quantiles} ({n_quantiles} quantiles x {need}) that feature.n_train, n_validation and n_test need "
            f"(each rounded down to a multiple of {n_quantiles}); lower them or pick a latent that fires more often")
    rng = random.Random(f"{seed}:latent{latent}")
    activating: dict[str, list[Window]] = {part: [] for part in PARTS}
    for quantile in range(n_quantiles):
        drawn = rng.sample(windows[quantile * size : (quantile + 1) * size], need)
        start = 0
        for part in PARTS:
            for window in drawn[start : start + per_quantile[part]]:
                window.quantile = quantile
                activating[part].append(window)
            start += per_quantile[part]
    fired = {w.index for w in windows}
    order = torch.randperm(len(reshaped), generator=torch.Generator().manual_seed(seed)).tolist()
    free = [i for i in order if i not in fired]
    non_activating: dict[str, list[Window]] = {}
    start = 0
    for part in PARTS:
        n = per_quantile[part] * n_quantiles
        if len(free) < start + n:
            raise GradspaceError(f"latent {latent} fires in all but {len(free)} windows of {cache.directory}, too few "
                                 f"non-activating windows for feature.n_train, n_validation and n_test")
        non_activating[part] = [Window(i, reshaped[i].tolist(), [0.0] * example_ctx_len, -1) for i in free[start : start + n]]
        start += n
    data = cache.latents[latent]
    return LatentWindows(latent, activating, non_activating, len(windows), float((data.values > 0).sum()) / cache.tokens.numel(),
                         cache.hookpoint)


@dataclass(frozen=True)
class WindowRule:
    """The written rule of conf/feature/delphi.yaml, on the strongest token of each activating window (the token
    an activating example is labelled at): a latent is eligible when it fires on a share of the cache's tokens
    within `density`, in at least `need` windows, and its strongest tokens name a class of content words: the
    commonest of them (case and leading space folded) is at most `max_top_share` of its windows, at most
    `max_common_share` are among the cache's `common_tokens` commonest tokens, and at least `min_word_share` are
    whole-word tokens of three letters or more (`vocabulary.word_tokens`)."""

    density: Sequence[float]
    max_top_share: float
    max_common_share: float
    common_tokens: int
    min_word_share: float

    @classmethod
    def of(cls, feature) -> WindowRule:
        return cls(list(feature.select_density), feature.select_max_top_share, feature.select_max_common_share,
                   feature.select_common_tokens, feature.select_min_word_share)


def strongest_tokens(cache: DelphiCache, latent: int, example_ctx_len: int) -> torch.Tensor:
    """The token at which each window where `latent` fires is strongest (the first such position on ties)."""
    data = cache.latents[latent]
    fired = data.values > 0
    order = torch.argsort(data.values[fired], descending=True, stable=True)
    flat = data.flat[fired][order]
    windows, inverse = torch.unique(flat // example_ctx_len, return_inverse=True)
    first = torch.full((len(windows),), len(flat), dtype=torch.long).scatter_reduce(
        0, inverse, torch.arange(len(flat)), reduce="amin")
    return cache.tokens.flatten()[flat[first]]


def windows_needed(feature) -> int:
    """The activating windows a latent needs for feature.n_train, n_validation and n_test, whole quantiles each."""
    return sum(n // feature.n_quantiles for n in (feature.n_train, feature.n_validation, feature.n_test)) * feature.n_quantiles


def select_cached_latents(cache: DelphiCache, count: int, rule: WindowRule, example_ctx_len: int, need: int,
                          tokenizer, vocabulary: int) -> list[int]:
    """`count` latents of the cache eligible by `rule`, at evenly spaced ranks of density, rarest to commonest."""
    words = word_tokens(tokenizer, vocabulary, min_letters=3)
    flat_tokens = cache.tokens.flatten()
    total = flat_tokens.numel()
    common = set(torch.bincount(flat_tokens).argsort(descending=True)[: rule.common_tokens].tolist())
    folded: dict[int, str] = {}

    def fold(token: int) -> str:
        if token not in folded:
            folded[token] = tokenizer.decode([token]).strip().lower()
        return folded[token]

    eligible = []
    for latent, data in cache.latents.items():
        share = float((data.values > 0).sum()) / total
        if not rule.density[0] <= share <= rule.density[1]:
            continue
        strongest = strongest_tokens(cache, latent, example_ctx_len).tolist()
        n = len(strongest)
        if n >= need and (Counter(map(fold, strongest)).most_common(1)[0][1] / n <= rule.max_top_share
                and sum(token in common for token in strongest) / n <= rule.max_common_share
                and int(words[strongest].sum()) / n >= rule.min_word_share):
            eligible.append((share, latent))
    if len(eligible) < count:
        raise GradspaceError(f"only {len(eligible)} latents of {cache.directory} meet the selection rule, fewer than "
                             f"feature.select_count={count}; lower it or loosen the feature.select_* settings")
    eligible.sort()
    ranks = torch.linspace(0, len(eligible) - 1, count).round().long().tolist()
    picks = [eligible[r][1] for r in ranks]
    log.info(f"feature.select_count={count}: the rule picks latents {picks} of the {len(eligible)} eligible in {cache.directory}")
    return picks


def fuzz_positions(window: Window, n_incorrect: int, threshold: float = 0.3) -> list[int]:
    """The tokens delphi's fuzzing scorer marks (`scorers/classifier/sample.py: _prepare_text`): in an activating
    window those whose activation reaches `threshold` x the window's largest; in a non-activating one `n_incorrect`
    tokens at random (seed 22), always with the one at len − len // 4 first."""
    if window.activating:
        top = max(window.activations)
        return [i for i, a in enumerate(window.activations) if a >= threshold * top]
    below = list(range(len(window.tokens)))
    n = min(n_incorrect, len(below))
    rng = random.Random(22)
    position = len(window.tokens) - len(window.tokens) // 4
    if position in below:
        rest = [i for i in below if i != position]
        return sorted([position, *(rng.sample(rest, n - 1) if n > 1 else [])])
    return sorted(rng.sample(below, n))


def mean_activations_ceil(windows: Sequence[Window]) -> int:
    """delphi's n_incorrect: the average number of firing tokens per activating window, rounded up."""
    return math.ceil(sum(sum(1 for a in w.activations if a != 0) for w in windows) / max(1, len(windows)))


def explanation_file(directory: str | Path, hookpoint: str, latent: int, label: str) -> Path:
    """`explanations/<hookpoint>_latent<i>.txt` as delphi's explainer writes it (`orjson.dumps(explanation)`, a JSON
    string), so that delphi's scorers can read it with `--explainer none`."""
    path = Path(directory) / f"{hookpoint}_latent{latent}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(json.dumps(label, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    return path


# --- the feature source --------------------------------------------------------------------------------------------


def window_example(window: Window, position: int):
    """The token at `position` as an example: the window's tokens before it are its context (what delphi shows)."""
    return Example(window.tokens[position], tuple(window.tokens[:position]))


def delphi_features(feature, tokenizer, vocabulary: int, model_name: str,
                    decoder: torch.Tensor | None = None) -> tuple[list, DelphiCache]:
    """`feature=delphi`: one feature per latent of the cache (feature.ids, or feature.select_count picked by the
    rule), its examples from delphi's windows (`latent_windows`): each activating window's strongest token with the
    window before it as its context, and one token at random of each non-activating window likewise (the same token
    for every latent). `decoder` [d_sae, d] (an SAE given beside the cache) adds the vocabulary projection."""
    counts = {"train": feature.n_train, "validation": feature.n_validation, "test": feature.n_test}
    for part, n in counts.items():
        if n < feature.n_quantiles:
            name = "n_test" if part == "test" else f"n_{part}"
            raise GradspaceError(f"feature.{name}={n} is fewer than feature.n_quantiles={feature.n_quantiles}: each quantile "
                                 f"needs at least one window per part")
    ids = [int(i) for i in feature.ids]
    cache = read_cache(feature.path, feature.hookpoint, None if (feature.select_count and not ids) else ids)
    check_tokens(cache, vocabulary, model_name)
    if feature.select_count and not ids:
        ids = select_cached_latents(cache, feature.select_count, WindowRule.of(feature), feature.example_ctx_len,
                                    windows_needed(feature), tokenizer, vocabulary)
    if decoder is not None and (max(ids) >= decoder.shape[0]):
        raise GradspaceError(f"the SAE given beside the cache has {decoder.shape[0]} latents, but feature.ids reach {max(ids)}; "
                             f"give the SAE the cache was written from")
    features = []
    for latent in ids:
        sampled = latent_windows(cache, latent, feature.example_ctx_len, feature.n_quantiles, counts, int(feature.split_seed))
        negative_position = {}

        def negative(window: Window):
            if window.index not in negative_position:
                negative_position[window.index] = random.Random(f"{feature.split_seed}:{window.index}").randrange(len(window.tokens))
            return window_example(window, negative_position[window.index])

        examples = {part: ([window_example(w, w.peak) for w in sampled.activating[part]],
                           [negative(w) for w in sampled.non_activating[part]]) for part in PARTS}
        fitted = sorted(sampled.activating["train"] + sampled.activating["validation"], key=lambda w: -max(w.activations))
        data = FeatureData(
            name=f"latent{latent}",
            train_positive=examples["train"][0], train_negative=examples["train"][1],
            validation_positive=examples["validation"][0], validation_negative=examples["validation"][1],
            heldout_positive=examples["test"][0], heldout_negative=examples["test"][1],
            top_activating_tokens=[w.tokens[w.peak] for w in fitted[: feature.top_n]],
            decoder_direction=None if decoder is None else decoder[latent].detach().float().cpu(),
            windows=sampled,
        )
        data.check()
        features.append(data)
    return features, cache
