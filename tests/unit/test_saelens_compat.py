"""SAE directories written by the installed SAELens itself, read here and compared with SAELens's own reading.

Every test builds a tiny SAE (d_in 16) with SAELens's classes, saves it with SAELens's `save_model` (or a training
SAE's `save_inference_model`), and checks that gradspace's reader encodes and decodes random activations as
`sae_lens.SAE.load_from_disk` of the same directory does.
"""

import json
import warnings

import pytest
import torch

from gradspace.errors import GradspaceError
from gradspace.labeling.sae import SparseAutoencoder, load_local_sae, load_saelens_sae, save_sae

sae_lens = pytest.importorskip("sae_lens", reason="SAELens is in the test extra: pip install -e '.[test]'")
from sae_lens.saes.sae import SAEMetadata  # noqa: E402

pytestmark = pytest.mark.unit

D_IN, D_SAE, K = 16, 48, 6
HOOK = "blocks.1.hook_resid_post"

# The SAELens inference classes whose saved directories gradspace reads, with their config arguments.
ARCHITECTURES = {
    "standard": (sae_lens.StandardSAE, sae_lens.StandardSAEConfig, {}),
    "jumprelu": (sae_lens.JumpReLUSAE, sae_lens.JumpReLUSAEConfig, {}),
    "topk": (sae_lens.TopKSAE, sae_lens.TopKSAEConfig, {"k": K}),
    "topk_rescaled": (sae_lens.TopKSAE, sae_lens.TopKSAEConfig, {"k": K, "rescale_acts_by_decoder_norm": True}),
}


def randomize(sae, seed: int = 0):
    """Random weights of every parameter (SAELens initialises biases to zero, which would hide bias handling)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(sae.named_parameters()):
            values = torch.randn(param.shape, generator=generator)
            param.copy_(values.abs() * 0.3 if name == "threshold" else values * (0.5 if param.ndim == 1 else 1.0))
    return sae


def saelens_sae(variant: str, **config):
    sae_class, config_class, arguments = ARCHITECTURES[variant]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return randomize(sae_class(config_class(d_in=D_IN, d_sae=D_SAE, metadata=SAEMetadata(hook_name=HOOK), **arguments, **config)))


def activations(seed: int = 1) -> torch.Tensor:
    return torch.randn(3, 7, D_IN, generator=torch.Generator().manual_seed(seed)) * 2 + 0.5


def assert_reads_like_saelens(directory):
    """gradspace's reading of `directory` encodes and decodes as SAELens's own reading of it."""
    reference = sae_lens.SAE.load_from_disk(directory)
    ours = load_local_sae(directory)
    x = activations()
    reference_acts = reference.encode(x)
    reference_reconstruction = reference.decode(reference_acts)  # SAELens undoes its input normalization here
    acts = ours.encode(x)
    assert ours.hook_name == HOOK and ours.d_in == D_IN and ours.d_sae == D_SAE
    torch.testing.assert_close(acts, reference_acts)
    assert torch.equal(acts != 0, reference_acts != 0)  # the same latents are active on every token
    torch.testing.assert_close(ours.decode(acts, x), reference_reconstruction)
    torch.testing.assert_close(ours(x), reference_reconstruction)
    return ours


@pytest.mark.parametrize("normalize_activations", ["none", "layer_norm", "constant_norm_rescale"])
@pytest.mark.parametrize("apply_b_dec_to_input", [True, False])
@pytest.mark.parametrize("variant", list(ARCHITECTURES))
def test_reads_what_saelens_saves(tmp_path, variant, apply_b_dec_to_input, normalize_activations):
    sae = saelens_sae(variant, apply_b_dec_to_input=apply_b_dec_to_input, normalize_activations=normalize_activations)
    sae.save_model(tmp_path)
    assert "hook_name" not in json.loads((tmp_path / "cfg.json").read_text())  # SAELens 6 keeps it under metadata
    assert_reads_like_saelens(tmp_path)


@pytest.mark.parametrize("training_class, config_class, architecture", [
    ("TopKTrainingSAE", "TopKTrainingSAEConfig", "topk"),
    ("BatchTopKTrainingSAE", "BatchTopKTrainingSAEConfig", "jumprelu"),  # SAELens saves a BatchTopK SAE as JumpReLU
])
def test_reads_saelens_training_saes_saved_for_inference(tmp_path, training_class, config_class, architecture):
    config = getattr(sae_lens, config_class)(d_in=D_IN, d_sae=D_SAE, k=K, rescale_acts_by_decoder_norm=True,
                                              metadata=SAEMetadata(hook_name=HOOK))
    sae = randomize(getattr(sae_lens, training_class)(config))
    sae.save_inference_model(tmp_path)
    assert json.loads((tmp_path / "cfg.json").read_text())["architecture"] == architecture
    assert assert_reads_like_saelens(tmp_path).architecture == architecture


@pytest.mark.parametrize("variant", ["standard", "jumprelu", "topk"])
def test_saelens_reads_what_gradspace_saves(tmp_path, variant):
    generator = torch.Generator().manual_seed(2)
    W_dec = torch.randn(D_SAE, D_IN, generator=generator)
    sae = SparseAutoencoder(
        torch.randn(D_IN, D_SAE, generator=generator), torch.randn(D_SAE, generator=generator) * 0.5, W_dec,
        torch.randn(D_IN, generator=generator) * 0.5, architecture=variant, hook_name=HOOK,
        threshold=torch.full((D_SAE,), 0.3) if variant == "jumprelu" else None, k=K if variant == "topk" else None,
    )
    save_sae(sae, tmp_path)
    assert_reads_like_saelens(tmp_path)


def test_gated_sae_is_refused_by_name(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sae_lens.GatedSAE(sae_lens.GatedSAEConfig(d_in=D_IN, d_sae=D_SAE, metadata=SAEMetadata(hook_name=HOOK))).save_model(tmp_path)
    with pytest.raises(GradspaceError, match=r"^SAE architecture 'gated' is not supported; supported: standard, jumprelu, topk$"):
        load_local_sae(tmp_path)


def test_d_in_of_cfg_must_match_the_weights(tmp_path):
    saelens_sae("standard").save_model(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    (tmp_path / "cfg.json").write_text(json.dumps({**cfg, "d_in": 2 * D_IN}))
    with pytest.raises(RuntimeError):  # SAELens refuses it too
        sae_lens.SAE.load_from_disk(tmp_path)
    with pytest.raises(GradspaceError, match=rf"cfg.json says d_in={2 * D_IN} but the weights have d_in={D_IN}"):
        load_local_sae(tmp_path)


def test_load_saelens_sae_converts_what_saelens_loads(tmp_path, monkeypatch):
    """`sae.source=saelens`: SAELens loads a release (here from a local directory, as the hub is off) and gradspace
    converts the loaded object."""
    saelens_sae("topk_rescaled", normalize_activations="layer_norm").save_model(tmp_path)
    monkeypatch.setattr(sae_lens.SAE, "from_pretrained", lambda release, sae_id, device: sae_lens.SAE.load_from_disk(tmp_path, device=device))
    ours = load_saelens_sae("some-release", "some-id")
    reference = sae_lens.SAE.load_from_disk(tmp_path)
    x = activations()
    torch.testing.assert_close(ours.encode(x), reference.encode(x))
    torch.testing.assert_close(ours(x), reference(x))
    assert ours.hook_name == HOOK


def test_load_saelens_sae_unknown_release_is_one_line():
    with pytest.raises(GradspaceError, match=r"SAELens could not load release 'no-such-release' id 'x' \(Release no-such-release not found"):
        load_saelens_sae("no-such-release", "x")
