"""The built-in SAE: trained on the residual stream at its hook, cached in SAELens format, and read at the right place."""

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from gradspace.labeling.features import latent_columns, sae_codes, select_latents
from gradspace.labeling.sae import load_local_sae
from gradspace.labeling.sae_training import BuiltinSAEConfig, collect_activations, ensure_builtin_sae
from gradspace.labeling.vocabulary import word_tokens
from gradspace.synth.tokenizer import build_word_tokenizer

pytestmark = pytest.mark.integration

WORDS = "the a dog cat sees runs big small is mammal ?".split()
TEXTS = ["the dog sees a cat", "a big cat runs", "the small dog runs", "is a dog a mammal ?", "a cat sees the big dog"] * 8


@pytest.fixture(scope="module")
def model_and_tokenizer():
    tokenizer = build_word_tokenizer(WORDS)
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=len(tokenizer),
        max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
    )).eval()
    return model, tokenizer


def test_builtin_sae_is_trained_once_and_cached(model_and_tokenizer, tmp_path, monkeypatch):
    model, tokenizer = model_and_tokenizer
    config = BuiltinSAEConfig(hook_name="blocks.0.hook_resid_post", d_sae=24, k=3, steps=60, batch_size=64, lr=3e-3)
    sae = ensure_builtin_sae(config, model, tokenizer, TEXTS, "tiny@main", tmp_path)
    (directory,) = (tmp_path / "saes").iterdir()
    reloaded = load_local_sae(directory)
    assert reloaded.architecture == "topk" and reloaded.k == 3 and reloaded.hook_name == "blocks.0.hook_resid_post"
    assert reloaded.extra_cfg["training"]["fraction_variance_explained"] > 0.3  # it learned to reconstruct
    x = collect_activations(model, tokenizer, TEXTS[:5], config.hook_name)
    assert torch.equal(reloaded.encode(x), sae.encode(x))
    import gradspace.labeling.sae_training as sae_training

    def no_training(*args):
        raise AssertionError("a cached SAE was trained again")

    monkeypatch.setattr(sae_training, "collect_activations", no_training)
    again = ensure_builtin_sae(config, model, tokenizer, TEXTS, "tiny@main", tmp_path)
    assert torch.equal(again.W_dec, reloaded.W_dec)
    # Other texts make another SAE: the cache is keyed by the texts as well as the model and the settings.
    with pytest.raises(AssertionError, match="trained again"):
        ensure_builtin_sae(config, model, tokenizer, TEXTS[:-1], "tiny@main", tmp_path)


def test_latents_read_the_residual_stream_at_the_hook(model_and_tokenizer, tmp_path):
    model, tokenizer = model_and_tokenizer
    text = TEXTS[0]
    full = [tokenizer.bos_token_id, *tokenizer.encode(text)]
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor([full]), output_hidden_states=True).hidden_states
    for layer in (0, 1):
        hook = f"blocks.{layer}.hook_resid_post"
        stream = collect_activations(model, tokenizer, [text], hook)
        # hidden_states[layer + 1] is block `layer`'s output, except after the last block, where HF has already
        # applied the final layer norm: the SAE must see the raw residual stream.
        assert torch.allclose(stream, hidden[layer + 1][0, 1:], atol=1e-5) == (layer == 0)
        sae = ensure_builtin_sae(BuiltinSAEConfig(hook_name=hook, d_sae=8, k=2, steps=2, batch_size=16), model, tokenizer,
                                 TEXTS, "tiny@main", tmp_path)
        ((tokens, acts),) = latent_columns(sae_codes(model, tokenizer, sae, [text]), range(8))
        assert tokens == full[1:] and torch.allclose(acts, sae.encode(stream), atol=1e-6)


def test_the_rule_picks_latents_whose_recomputed_firings_meet_it(model_and_tokenizer, tmp_path):
    """select_latents reads the texts' SAE codes: the latents it picks fire, on the same texts read again by
    latent_columns, at the densities it reports, only on words, on enough distinct words."""
    model, tokenizer = model_and_tokenizer
    sae = ensure_builtin_sae(BuiltinSAEConfig(hook_name="blocks.0.hook_resid_post", d_sae=24, k=3, steps=60, batch_size=64, lr=3e-3),
                             model, tokenizer, TEXTS, "tiny@main", tmp_path)
    words = word_tokens(tokenizer, len(tokenizer), min_letters=1)
    chosen = select_latents(sae_codes(model, tokenizer, sae, TEXTS), words, count=2, threshold=0.0, density=[0.01, 0.6],
                            word_share=0.9, min_words=2)
    assert len(chosen.ids) == 2 and chosen.eligible >= 2 and chosen.tokens == sum(len(tokenizer.encode(t)) for t in TEXTS)
    read = latent_columns(sae_codes(model, tokenizer, sae, TEXTS), chosen.ids)
    tokens = torch.tensor([t for ids, _ in read for t in ids])
    fired = torch.cat([acts for _, acts in read]) > 0
    for column, latent in enumerate(chosen.ids):
        on = tokens[fired[:, column]]
        assert chosen.density[latent] == pytest.approx(len(on) / len(tokens)) and 0.01 <= chosen.density[latent] <= 0.6
        assert words[on].float().mean() >= 0.9 and len(set(on.tolist())) == chosen.distinct_words[latent] >= 2
