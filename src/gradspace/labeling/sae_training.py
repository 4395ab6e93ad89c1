"""The built-in SAE: a TopK (or L1-penalised ReLU) autoencoder trained on a model's residual stream over a corpus,
so the SAE path runs offline. It is cached in SAELens format under `cache_dir/saes/`, keyed by model and config.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch

from gradspace.errors import GradspaceError
from gradspace.labeling.activations import token_activations
from gradspace.labeling.sae import CFG_FILE, SparseAutoencoder, check_topk_k, load_local_sae, save_sae
from gradspace.utils.cache import fingerprint

TRAINABLE = ("topk", "standard")


@dataclass
class BuiltinSAEConfig:
    hook_name: str | None = None  # None: the model's middle layer, blocks.<n_layers // 2>.hook_resid_post
    architecture: str = "topk"
    d_sae: int = 512
    k: int = 8  # topk: latents active per token
    l1_coefficient: float = 3e-3  # standard: sparsity penalty on decoder-norm-weighted activations
    steps: int = 1500
    batch_size: int = 512
    lr: float = 1e-3
    n_texts: int = 20000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.architecture not in TRAINABLE:
            raise GradspaceError(f"sae.architecture='{self.architecture}' cannot be trained here; use one of {', '.join(TRAINABLE)}")
        if isinstance(self.d_sae, bool) or not isinstance(self.d_sae, int) or self.d_sae < 1:
            raise GradspaceError(f"sae.d_sae={self.d_sae!r} must be a whole number >= 1; set sae.d_sae=<latents>")
        if self.architecture == "topk":
            check_topk_k(self.k, self.d_sae, "sae.k")


def collect_activations(lm, tokenizer, texts: Sequence[str], hook_name: str) -> torch.Tensor:
    """Activations [n_tokens, d] at `hook_name` for every token of `texts` (not the document-start token)."""
    return torch.cat([acts for _, acts in token_activations(lm, tokenizer, texts, hook_name, batch_size=256)])


def train_sae(activations: torch.Tensor, config: BuiltinSAEConfig, hook_name: str, extra_cfg: dict | None = None) -> SparseAutoencoder:
    generator = torch.Generator().manual_seed(config.seed)
    d_in = activations.shape[1]
    W_dec = torch.randn(config.d_sae, d_in, generator=generator)
    W_dec = W_dec / W_dec.norm(dim=1, keepdim=True)
    sae = SparseAutoencoder(
        W_dec.T.clone(), torch.zeros(config.d_sae), W_dec, activations.mean(0),
        architecture=config.architecture, hook_name=hook_name, k=config.k if config.architecture == "topk" else None,
        extra_cfg=extra_cfg,
    )
    optimizer = torch.optim.Adam(sae.parameters(), lr=config.lr)
    for _ in range(config.steps):
        batch = activations[torch.randint(len(activations), (config.batch_size,), generator=generator)]
        acts = sae.encode(batch)
        loss = (sae.decode(acts) - batch).pow(2).sum(-1).mean()
        if config.architecture == "standard":
            loss = loss + config.l1_coefficient * (acts * sae.W_dec.norm(dim=1)).sum(-1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():  # unit-norm decoder rows keep activations comparable across latents
            sae.W_dec.div_(sae.W_dec.norm(dim=1, keepdim=True))
    return sae


def ensure_builtin_sae(config: BuiltinSAEConfig, lm, tokenizer, texts: Sequence[str], model_id: str, cache_dir: str | Path) -> SparseAutoencoder:
    """The cached SAE for (model, config), trained on `texts` the first time."""
    texts = list(texts)[: config.n_texts]
    if config.hook_name is None:
        raise GradspaceError("the built-in SAE needs sae.hook_name (label.py fills in the model's middle layer)")
    key = fingerprint({"model": model_id, **asdict(config)}, texts)[:12]
    directory = Path(cache_dir).expanduser() / "saes" / f"{config.architecture}-{config.d_sae}-{config.hook_name}-{key}"
    if (directory / CFG_FILE).is_file():
        return load_local_sae(directory)
    activations = collect_activations(lm, tokenizer, texts, config.hook_name)
    sae = train_sae(activations, config, config.hook_name, extra_cfg={"model_name": model_id, "training": asdict(config)})
    with torch.no_grad():
        recon = sae(activations[:4096])
        fve = 1 - (recon - activations[:4096]).pow(2).sum() / (activations[:4096] - activations[:4096].mean(0)).pow(2).sum()
    sae.extra_cfg["training"]["fraction_variance_explained"] = round(float(fve), 4)
    save_sae(sae, directory)
    return sae
