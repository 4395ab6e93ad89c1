import contextlib
import os
from pathlib import Path

import pytest
import torch

from gradspace.utils.memory import _glibc, return_freed_memory

pytestmark = pytest.mark.unit


def resident_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(_glibc() is None or not Path("/proc/self/statm").exists(), reason="malloc_trim is glibc's")
def test_freed_tensors_under_the_mmap_threshold_leave_the_process_when_returned():
    torch.empty(20 * 2**20, dtype=torch.uint8).fill_(1)  # freeing this mmapped 20 MB chunk raises glibc's mmap threshold
    blocks = [torch.ones(2**20) for _ in range(100)]  # 400 MB in 4 MB tensors, now from the heap
    kept = blocks[9::10]  # every tenth stays: the other 360 MB become holes that free() alone cannot give back
    before = resident_mb()
    del blocks
    freed = resident_mb()
    return_freed_memory()
    returned = resident_mb()
    assert len(kept) == 10
    assert before - freed < 100, "glibc gave the pages back without being asked: this test no longer shows anything"
    assert freed - returned > 250


def tiny_llama(tied: bool):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied))


def gradients(model, sparse: bool) -> dict[str, torch.Tensor]:
    from gradspace.utils.memory import sparse_tied_embedding_gradient

    ids = torch.randint(0, 97, (3, 7), generator=torch.Generator().manual_seed(1))
    model.zero_grad(set_to_none=True)
    with sparse_tied_embedding_gradient(model) if sparse else contextlib.nullcontext() as applied:
        for _ in range(2):  # two passes accumulate into the same .grad, as micro-batches do
            model(input_ids=ids, labels=ids).loss.backward()
    assert applied is None or applied == model.config.tie_word_embeddings
    return {name: param.grad.clone() for name, param in model.named_parameters()}


def test_a_tied_embedding_takes_the_same_gradient_without_a_dense_buffer():
    model = tiny_llama(tied=True)
    dense, sparse = gradients(model, sparse=False), gradients(model, sparse=True)
    embedding = "model.embed_tokens.weight"
    assert not sparse[embedding].is_sparse and sparse.keys() == dense.keys()
    assert all(torch.allclose(sparse[name], dense[name], atol=1e-6) for name in dense)
    assert not model.get_input_embeddings().sparse  # restored after the context
    untied = tiny_llama(tied=False)
    gradients(untied, sparse=True)  # left dense: Adam refuses a sparse gradient
    assert not untied.get_input_embeddings().weight.grad.is_sparse
