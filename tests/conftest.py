import os

# Nothing in the test suite may reach a hub or prompt for W&B credentials.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

TINY_VOCABULARY = (
    "the a dog dogs cat cats bird birds runs run sees see near that . ? yes no is mammal bird fish himself herself"
).split()


def build_tiny_lm(seed: int = 0, vocabulary=TINY_VOCABULARY):
    """A random 2-layer GPT-NeoX with a word-level tokenizer: the smallest model the real code paths accept."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from gradspace.synth.tokenizer import build_word_tokenizer

    tokenizer = build_word_tokenizer(list(dict.fromkeys(vocabulary)))
    torch.manual_seed(seed)
    config = GPTNeoXConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        vocab_size=len(tokenizer), max_position_embeddings=64, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    return GPTNeoXForCausalLM(config).eval(), tokenizer


@pytest.fixture
def tiny_lm():
    return build_tiny_lm()


@pytest.fixture
def tiny_model_dir(tmp_path):
    """The tiny model saved like a hub checkpoint (safetensors + tokenizer), for `model=local` runs."""
    model, tokenizer = build_tiny_lm()
    path = tmp_path / "tiny-neox"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
