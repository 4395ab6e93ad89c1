"""SAELens disk format without SAELens: round trips, the encoding rules of ReLU, JumpReLU and TopK SAEs, the older flat
cfg.json, one-line errors for damaged files, and the README's SAE commands. Directories written by SAELens itself:
test_saelens_compat.py."""

import json
import re
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from safetensors.torch import save_file

from gradspace.errors import GradspaceError
from gradspace.labeling.features import sae_latent_features
from gradspace.labeling.sae import SparseAutoencoder, load_local_sae, save_sae

pytestmark = pytest.mark.unit

D_IN, D_SAE = 6, 10
ROOT = Path(__file__).resolve().parents[2]


def random_sae(architecture, **kwargs):
    g = torch.Generator().manual_seed(0)
    return SparseAutoencoder(
        torch.randn(D_IN, D_SAE, generator=g), torch.randn(D_SAE, generator=g) * 0.1, torch.randn(D_SAE, D_IN, generator=g),
        torch.randn(D_IN, generator=g) * 0.1, architecture=architecture, hook_name="blocks.1.hook_resid_post", **kwargs,
    )


SAES = {
    "standard": lambda: random_sae("standard"),
    "jumprelu": lambda: random_sae("jumprelu", threshold=torch.full((D_SAE,), 0.5)),
    "topk": lambda: random_sae("topk", k=3),
}


@pytest.mark.parametrize("architecture", list(SAES))
def test_round_trip_preserves_encoding(tmp_path, architecture):
    sae = SAES[architecture]()
    save_sae(sae, tmp_path / "sae")
    cfg = json.loads((tmp_path / "sae" / "cfg.json").read_text())
    assert cfg["hook_name"] == cfg["metadata"]["hook_name"] == "blocks.1.hook_resid_post" and cfg["architecture"] == architecture
    loaded = load_local_sae(tmp_path / "sae")
    x = torch.randn(4, 5, D_IN, generator=torch.Generator().manual_seed(1))
    assert loaded.architecture == architecture and loaded.hook_name == sae.hook_name
    assert torch.equal(loaded.encode(x), sae.encode(x))


def test_encoding_rules():
    x = torch.randn(50, D_IN, generator=torch.Generator().manual_seed(2))
    pre = SAES["standard"]().pre_activations(x)
    assert torch.allclose(pre, (x - SAES["standard"]().b_dec) @ SAES["standard"]().W_enc + SAES["standard"]().b_enc)
    assert torch.equal(SAES["standard"]().encode(x), pre.relu())
    jump = SAES["jumprelu"]().encode(x)
    assert torch.equal(jump, torch.where(pre > 0.5, pre, torch.zeros_like(pre)))
    top = SAES["topk"]().encode(x)
    assert ((top > 0).sum(-1) <= 3).all()
    kept = pre.topk(3, dim=-1)
    assert torch.equal(top.gather(-1, kept.indices), kept.values.relu())


def test_reads_older_saelens_cfg_and_log_threshold(tmp_path):
    """SAELens < 6 wrote a flat cfg.json (hook_point, activation_fn_str, a normalize_activations flag) and log_threshold."""
    sae = SAES["topk"]()
    tensors = {n: getattr(sae, n).detach() for n in ("W_enc", "b_enc", "W_dec", "b_dec")}
    save_file(tensors, str(tmp_path / "sae_weights.safetensors"))
    (tmp_path / "cfg.json").write_text(json.dumps({
        "architecture": "standard", "activation_fn_str": "topk", "activation_fn_kwargs": {"k": 3},
        "hook_point": "blocks.1.hook_resid_post", "d_in": D_IN, "d_sae": D_SAE, "normalize_activations": False,
    }))
    loaded = load_local_sae(tmp_path)
    assert loaded.architecture == "topk" and loaded.k == 3
    x = torch.randn(3, D_IN)
    assert torch.equal(loaded.encode(x), sae.encode(x))

    jump = tmp_path / "jump"
    jump.mkdir()
    save_file({**tensors, "log_threshold": torch.zeros(D_SAE)}, str(jump / "sae_weights.safetensors"))
    (jump / "cfg.json").write_text(json.dumps({"architecture": "jumprelu", "hook_name": "blocks.0.hook_resid_pre"}))
    loaded = load_local_sae(jump)
    assert loaded.hook_name == "blocks.0.hook_resid_pre" and torch.allclose(loaded.threshold, torch.ones(D_SAE))


def test_format_errors(tmp_path):
    with pytest.raises(GradspaceError, match="not an SAELens-format SAE directory"):
        load_local_sae(tmp_path)
    with pytest.raises(GradspaceError, match="needs k"):
        random_sae("topk")
    with pytest.raises(GradspaceError, match="not supported"):
        random_sae("gated")
    with pytest.raises(GradspaceError, match="normalize_activations"):
        random_sae("standard", normalize_activations="expected_average_only_in")


def test_decoding_a_normalized_sae_needs_its_inputs():
    sae = random_sae("standard", normalize_activations="layer_norm")
    x = torch.randn(4, D_IN, generator=torch.Generator().manual_seed(3)) * 5 + 2
    with pytest.raises(ValueError, match="pass them to decode"):
        sae.decode(sae.encode(x))
    reconstruction = sae(x)  # on the inputs' own scale: SAELens maps it back with their mean and std
    centered = x - x.mean(-1, keepdim=True)
    normalized_reconstruction = sae.encode(x) @ sae.W_dec + sae.b_dec
    assert torch.allclose(reconstruction, normalized_reconstruction * centered.std(-1, keepdim=True) + x.mean(-1, keepdim=True))


def saved_sae(directory):
    save_sae(SAES["standard"](), directory)
    return directory


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "cfg.json").write_text('{"architecture": "standard",'), r"cfg.json cannot be read as JSON \(.*\); restore it or save the SAE again"),
    (lambda d: (d / "cfg.json").write_bytes(b"\xff\xfe{}"), r"cfg.json cannot be read as JSON"),
    (lambda d: (d / "cfg.json").write_text("[1, 2]"), r"cfg.json holds a JSON list, not the object of an SAE config"),
    (lambda d: (d / "sae_weights.safetensors").write_bytes((d / "sae_weights.safetensors").read_bytes()[:200]),
     r"sae_weights.safetensors cannot be read \(.*\); the file is truncated or damaged: download or save the SAE again"),
    (lambda d: (d / "sae_weights.safetensors").write_bytes(b""), r"sae_weights.safetensors cannot be read"),
])
def test_damaged_files_are_one_line_errors(tmp_path, damage, message):
    directory = saved_sae(tmp_path / "sae")
    damage(directory)
    with pytest.raises(GradspaceError, match=message) as raised:
        load_local_sae(directory)
    assert "\n" not in str(raised.value) and str(directory) in str(raised.value)


def test_cfg_sizes_must_match_the_weights(tmp_path):
    directory = saved_sae(tmp_path / "sae")
    cfg = json.loads((directory / "cfg.json").read_text())
    (directory / "cfg.json").write_text(json.dumps({**cfg, "d_sae": D_SAE + 1}))
    with pytest.raises(GradspaceError, match=rf"cfg.json says d_sae={D_SAE + 1} but the weights have d_sae={D_SAE}"):
        load_local_sae(directory)


def test_latent_index_out_of_range_is_an_error():
    with pytest.raises(GradspaceError, match=r"out of range; this SAE has 10 latents"):
        sae_latent_features([3, 10], sae=SAES["standard"](), train_codes=[], heldout_codes=[], threshold=0.0, max_examples=10, seed=0)


def test_documented_sae_commands_compose():
    """Every `python label.py ... sae=...` line of the README and docs/labeling.md composes (the README once said
    sae.sae_id where the key is sae.id)."""
    text = "\n".join((ROOT / name).read_text(encoding="utf-8") for name in ("README.md", "docs/labeling.md"))
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("python label.py") and " sae=" in line]
    assert {re.search(r" sae=(\w+)", line).group(1) for line in lines} == {"builtin", "local", "saelens"}
    for line in lines:
        overrides = re.sub(r"<[^>]*>", "x", line.split("#")[0]).split()[2:]  # placeholders such as <id> filled in
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            compose(config_name="label", overrides=overrides)
