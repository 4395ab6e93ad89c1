"""Sparse autoencoders in the SAELens disk format, read and written without SAELens.

A directory holds `cfg.json` and `sae_weights.safetensors` (W_enc [d_in, d_sae], b_enc, W_dec [d_sae, d_in],
b_dec, and `threshold` for JumpReLU). Both SAELens 6's cfg.json (the hook under `metadata.hook_name`, `k`) and the
older flat one (`hook_name` or `hook_point`, `activation_fn_str: topk` with `activation_fn_kwargs.k`) are read.
`sae.source=saelens` loads a release through SAELens itself (an optional extra, imported only then) and converts
it to the same class.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from gradspace.errors import GradspaceError
from gradspace.utils.io import atomic_write_json

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
ARCHITECTURES = ("standard", "jumprelu", "topk")
NORMALIZATIONS = ("none", "constant_norm_rescale", "layer_norm")
# cfg.json keys kept with the SAE and reported with the labels.
EXTRA_CFG_KEYS = ("model_name", "metadata", "training")


def check_architecture(architecture: str) -> None:
    if architecture not in ARCHITECTURES:
        raise GradspaceError(f"SAE architecture '{architecture}' is not supported; supported: {', '.join(ARCHITECTURES)}")


def check_topk_k(k, d_sae: int, name: str) -> int:
    """A TopK SAE keeps k of its d_sae latents per token: k must be a whole number in 1..d_sae (8.0 is 8)."""
    if isinstance(k, float) and k.is_integer():
        k = int(k)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= d_sae:
        raise GradspaceError(f"{name}={k!r} must be a whole number in 1..{d_sae} (the SAE's d_sae); set it within that range")
    return k


class SparseAutoencoder(nn.Module):
    """ReLU ("standard"), JumpReLU or TopK SAE with SAELens's encoding and decoding conventions."""

    def __init__(self, W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor, b_dec: torch.Tensor, *,
                 architecture: str, hook_name: str, threshold: torch.Tensor | None = None, k: int | None = None,
                 apply_b_dec_to_input: bool = True, normalize_activations: str = "none", extra_cfg: Mapping | None = None):
        super().__init__()
        check_architecture(architecture)
        if normalize_activations not in NORMALIZATIONS:
            raise GradspaceError(
                f"SAE normalize_activations='{normalize_activations}' is not supported; fold the scaling into the weights "
                f"(SAELens: fold_activation_norm_scaling_factor) and save again"
            )
        if architecture == "jumprelu" and threshold is None:
            raise GradspaceError("a jumprelu SAE needs a 'threshold' tensor in sae_weights.safetensors")
        if architecture == "topk" and k is None:
            raise GradspaceError("a topk SAE needs k in cfg.json ('k' or activation_fn_kwargs.k)")
        d_in, d_sae = W_enc.shape
        if architecture == "topk":
            k = check_topk_k(k, d_sae, "cfg.json k")
        if W_dec.shape != (d_sae, d_in) or b_enc.shape != (d_sae,) or b_dec.shape != (d_in,):
            raise GradspaceError(
                f"SAE weight shapes disagree (W_enc {tuple(W_enc.shape)}, W_dec {tuple(W_dec.shape)}, b_enc {tuple(b_enc.shape)}, "
                f"b_dec {tuple(b_dec.shape)}); the files are not one SAE"
            )
        self.W_enc = nn.Parameter(W_enc.float())
        self.b_enc = nn.Parameter(b_enc.float())
        self.W_dec = nn.Parameter(W_dec.float())
        self.b_dec = nn.Parameter(b_dec.float())
        self.register_buffer("threshold", None if threshold is None else threshold.float())
        self.architecture = architecture
        self.hook_name = hook_name
        self.k = int(k) if k else None
        self.apply_b_dec_to_input = apply_b_dec_to_input
        self.normalize_activations = normalize_activations
        self.extra_cfg = dict(extra_cfg or {})

    @property
    def d_in(self) -> int:
        return self.W_enc.shape[0]

    @property
    def d_sae(self) -> int:
        return self.W_enc.shape[1]

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize_activations == "constant_norm_rescale":
            return x * ((self.d_in**0.5) / x.norm(dim=-1, keepdim=True))
        if self.normalize_activations == "layer_norm":
            x = x - x.mean(dim=-1, keepdim=True)
            return x / (x.std(dim=-1, keepdim=True) + 1e-5)
        return x

    def _denormalize(self, reconstruction: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Undo `_normalize` with the statistics of the inputs, written as SAELens writes it (layer_norm's way out
        multiplies by the std without the epsilon its way in added)."""
        if self.normalize_activations == "constant_norm_rescale":
            return reconstruction / ((self.d_in**0.5) / inputs.norm(dim=-1, keepdim=True))
        if self.normalize_activations == "layer_norm":
            centered = inputs - inputs.mean(dim=-1, keepdim=True)
            return reconstruction * centered.std(dim=-1, keepdim=True) + inputs.mean(dim=-1, keepdim=True)
        return reconstruction

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        x = self._normalize(x.to(self.W_enc.dtype))
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre_activations(x)
        if self.architecture == "standard":
            return torch.relu(pre)
        if self.architecture == "jumprelu":
            return torch.relu(pre) * (pre > self.threshold)
        top = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))

    def decode(self, acts: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """The reconstruction of the activations `inputs` that were encoded to `acts`. Only an SAE with
        normalize_activations needs `inputs`: it maps the reconstruction back to their scale."""
        reconstruction = acts @ self.W_dec + self.b_dec
        if self.normalize_activations == "none":
            return reconstruction
        if inputs is None:
            raise ValueError(f"this SAE normalizes its inputs ({self.normalize_activations}); pass them to decode(acts, inputs)")
        return self._denormalize(reconstruction, inputs.to(self.W_dec.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x), x)

    def cfg_dict(self) -> dict:
        """cfg.json as SAELens 6 writes it (hook under `metadata`), plus the flat `hook_name` that older SAELens
        reads and that SAELens 6 reads from files without a `metadata.sae_lens_version`."""
        cfg = {
            **self.extra_cfg,
            "architecture": self.architecture,
            "d_in": self.d_in,
            "d_sae": self.d_sae,
            "dtype": "float32",
            "device": "cpu",
            "hook_name": self.hook_name,
            "apply_b_dec_to_input": self.apply_b_dec_to_input,
            "normalize_activations": self.normalize_activations,
            "metadata": {**dict(self.extra_cfg.get("metadata") or {}), "hook_name": self.hook_name},
        }
        if self.k:
            cfg["k"] = self.k
            cfg["activation_fn_kwargs"] = {"k": self.k}
        return cfg


def save_sae(sae: SparseAutoencoder, directory: str | Path) -> Path:
    """Write `cfg.json` and `sae_weights.safetensors`; the config is written last, so a directory with a config is complete."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: getattr(sae, name).detach().contiguous().cpu() for name in ("W_enc", "b_enc", "W_dec", "b_dec")}
    if sae.threshold is not None:
        tensors["threshold"] = sae.threshold.detach().contiguous().cpu()
    save_file(tensors, str(directory / WEIGHTS_FILE))
    atomic_write_json(directory / CFG_FILE, sae.cfg_dict())
    return directory


def _architecture(cfg: Mapping) -> str:
    name = str(cfg.get("architecture") or "standard").lower()
    if name == "standard" and cfg.get("activation_fn_str") == "topk":
        return "topk"
    return {"jump_relu": "jumprelu", "relu": "standard"}.get(name, name)


def _normalization(cfg: Mapping) -> str:
    value = cfg.get("normalize_activations")
    if isinstance(value, bool):  # SAELens < 6 wrote a flag for what SAELens 6 calls expected_average_only_in
        return "expected_average_only_in" if value else "none"
    return str(value or "none")


def _fold_decoder_norm(W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """A TopK SAE with rescale_acts_by_decoder_norm ranks pre-activations times the decoder row norms and divides
    its activations by them before decoding; scaling the encoder by the norms and the decoder rows to unit norm
    gives the same encode and decode with the plain rules (SAELens: fold_W_dec_norm)."""
    norms = W_dec.norm(dim=-1)
    return W_enc * norms, b_enc * norms, W_dec / norms[:, None]


def sae_from_parts(cfg: Mapping, tensors: Mapping[str, torch.Tensor], where: str) -> SparseAutoencoder:
    architecture = _architecture(cfg)
    check_architecture(architecture)
    missing = [name for name in ("W_enc", "b_enc", "W_dec", "b_dec") if name not in tensors]
    if missing:
        raise GradspaceError(f"{where} lacks SAE weights {missing}; it is not an SAELens-format SAE")
    metadata = cfg.get("metadata") if isinstance(cfg.get("metadata"), Mapping) else {}
    hook_name = metadata.get("hook_name") or cfg.get("hook_name") or cfg.get("hook_point")
    if not hook_name:
        raise GradspaceError(f"{where}: cfg.json names no hook_name; add \"metadata\": {{\"hook_name\": \"blocks.<layer>.hook_resid_post\"}}")
    # A weight that is NaN or infinite (a diverged training run, a damaged file) would surface later as a latent that
    # never fires or a corpus "without" activations; name the tensor here instead.
    broken = [name for name, tensor in tensors.items() if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
    if broken:
        raise GradspaceError(f"{where}: SAE weights {', '.join(sorted(broken))} hold NaN or infinite values; the SAE diverged or "
                             f"its file is damaged: retrain or re-save it")
    W_enc, b_enc, W_dec = tensors["W_enc"].float(), tensors["b_enc"].float(), tensors["W_dec"].float()
    for key, size in (("d_in", W_enc.shape[0]), ("d_sae", W_enc.shape[-1])):
        if key in cfg and cfg[key] != size:
            raise GradspaceError(f"{where}: cfg.json says {key}={cfg[key]} but the weights have {key}={size}; the files are not one SAE")
    if architecture == "topk" and cfg.get("rescale_acts_by_decoder_norm"):
        W_enc, b_enc, W_dec = _fold_decoder_norm(W_enc, b_enc, W_dec)
    threshold = tensors.get("threshold")
    if threshold is None and "log_threshold" in tensors:
        threshold = tensors["log_threshold"].exp()
    return SparseAutoencoder(
        W_enc, b_enc, W_dec, tensors["b_dec"],
        architecture=architecture, hook_name=str(hook_name), threshold=threshold,
        k=cfg.get("k") or (cfg.get("activation_fn_kwargs") or {}).get("k"),
        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
        normalize_activations=_normalization(cfg),
        extra_cfg={key: cfg[key] for key in EXTRA_CFG_KEYS if key in cfg},
    )


def _read_cfg(path: Path) -> Mapping:
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise GradspaceError(f"{path} cannot be read as JSON ({err}); restore it or save the SAE again") from None
    if not isinstance(cfg, dict):
        raise GradspaceError(f"{path} holds a JSON {type(cfg).__name__}, not the object of an SAE config; restore it or save the SAE again")
    return cfg


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (OSError, SafetensorError) as err:
        raise GradspaceError(f"{path} cannot be read ({err}); the file is truncated or damaged: download or save the SAE again") from None


def load_local_sae(directory: str | Path) -> SparseAutoencoder:
    directory = Path(directory).expanduser()
    if not (directory / CFG_FILE).is_file() or not (directory / WEIGHTS_FILE).is_file():
        raise GradspaceError(
            f"{directory} is not an SAELens-format SAE directory (needs {CFG_FILE} and {WEIGHTS_FILE}); set sae.path to one"
        )
    cfg = _read_cfg(directory / CFG_FILE)
    return sae_from_parts(cfg, _read_weights(directory / WEIGHTS_FILE), str(directory))


def load_saelens_sae(release: str, sae_id: str) -> SparseAutoencoder:
    """A pretrained SAE through `sae_lens.SAE.from_pretrained` (needs the `sae` extra and, the first time, the hub)."""
    try:
        from sae_lens import SAE  # the optional `sae` extra: imported only for sae.source=saelens
    except ImportError:
        raise GradspaceError("sae.source=saelens needs SAELens; pip install 'gradspace[sae]' (or use sae.source=local)") from None
    try:
        sae = SAE.from_pretrained(release, sae_id, device="cpu")
    except Exception as err:  # SAELens raises plain ValueError/OSError/HF errors for unknown ids and offline hubs
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise GradspaceError(
            f"SAELens could not load release '{release}' id '{sae_id}' ({first_line}); check the ids in SAELens's "
            f"pretrained_saes.yaml, connect once to cache it, or save it with sae.save_model(dir) and use sae.source=local"
        ) from None
    tensors = {name: tensor.detach() for name, tensor in sae.state_dict().items()}
    return sae_from_parts(sae.cfg.to_dict(), tensors, f"SAELens {release}/{sae_id}")  # SAELens 6: the hook is in metadata
