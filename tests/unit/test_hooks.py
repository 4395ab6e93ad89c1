import pytest
import torch
from transformers import (
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
)

from gradspace.errors import GradspaceError
from gradspace.models.hooks import capture_activations

pytestmark = pytest.mark.unit


def tiny_models():
    torch.manual_seed(0)
    neox = GPTNeoXForCausalLM(GPTNeoXConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                            intermediate_size=64, vocab_size=40, max_position_embeddings=32))
    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=40, n_positions=32,
                                      bos_token_id=0, eos_token_id=0))
    # The real models' architectures (SmolLM2: llama, Gemma-3-270M: gemma3_text), as tiny as these.
    llama = LlamaForCausalLM(LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         intermediate_size=64, vocab_size=40, max_position_embeddings=32))
    gemma = Gemma3ForCausalLM(Gemma3TextConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                               head_dim=8, intermediate_size=64, vocab_size=40, max_position_embeddings=32,
                                               sliding_window=16))
    return [(neox.eval(), neox.gpt_neox.final_layer_norm), (gpt2.eval(), gpt2.transformer.ln_f), (llama.eval(), llama.model.norm),
            (gemma.eval(), gemma.model.norm)]


@pytest.mark.parametrize("model, final_norm", tiny_models())
def test_resid_hooks_match_hidden_states_and_last_layer_is_pre_norm(model, final_norm):
    ids = torch.randint(0, 40, (2, 6))
    names = ["blocks.0.hook_resid_pre", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post", "blocks.1.hook_mlp_out"]
    with torch.no_grad(), capture_activations(model, names) as acts:
        hidden = model(ids, output_hidden_states=True).hidden_states
    assert torch.allclose(acts["blocks.0.hook_resid_pre"], hidden[0])
    assert torch.allclose(acts["blocks.0.hook_resid_post"], hidden[1])
    # HF applies the final norm to its last hidden state; the canonical hook is the raw residual stream.
    assert not torch.allclose(acts["blocks.1.hook_resid_post"], hidden[2])
    assert torch.allclose(final_norm(acts["blocks.1.hook_resid_post"]), hidden[2], atol=1e-6)
    assert acts["blocks.1.hook_mlp_out"].shape == (2, 6, 32)


def test_hooks_are_removed_after_the_context():
    model, _ = tiny_models()[0]
    with capture_activations(model, ["blocks.0.hook_resid_post"]) as acts:
        pass
    model(torch.tensor([[1, 2]]))
    assert acts == {}


@pytest.mark.parametrize("name, message", [("blocks.7.hook_resid_post", "has 2 layers"), ("resid_post", "not supported")])
def test_bad_hook_names(name, message):
    model, _ = tiny_models()[0]
    with pytest.raises(GradspaceError, match=message):
        with capture_activations(model, [name]):
            pass


@pytest.mark.parametrize("model, final_norm", tiny_models())
def test_a_forward_stopped_at_the_hook_captures_the_same_and_runs_nothing_after(model, final_norm):
    ids = torch.randint(0, 40, (2, 6))
    with torch.no_grad(), capture_activations(model, ["blocks.0.hook_resid_post"]) as full:
        model(ids)
    after = []
    handle = final_norm.register_forward_hook(lambda *_: after.append(True))
    with torch.no_grad(), capture_activations(model, ["blocks.0.hook_resid_post"], stop_forward=True) as stopped:
        model(ids)
        after.append("the statement after the forward")  # skipped: the forward ended by leaving the context
    handle.remove()
    assert torch.equal(stopped["blocks.0.hook_resid_post"], full["blocks.0.hook_resid_post"]) and after == []
