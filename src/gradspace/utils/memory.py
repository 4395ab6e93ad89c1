"""Memory of training in one process: giving freed memory back to the operating system between jobs that run one
after another, and gradients that need no dense buffer."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
from typing import Iterator

import torch


@functools.cache
def _glibc():
    name = ctypes.util.find_library("c")
    try:
        library = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return library if library is not None and hasattr(library, "malloc_trim") else None


def return_freed_memory() -> None:
    """Free what only reference cycles keep (Lightning's trainer, module and callbacks refer to one another), then
    ask glibc to hand its free heap pages back (`malloc_trim`; nothing to ask without glibc: macOS, musl).

    PyTorch's CPU tensors under glibc's mmap threshold (up to 32 MB) come from its heap, which keeps the pages of
    freed tensors that lie between live ones: a fine-tuned copy of Gemma-3-270M has about 0.4 GB of such tensors,
    each with a gradient and two Adam moments, besides its activations.
    """
    gc.collect()
    library = _glibc()
    if library is not None:
        library.malloc_trim(0)


@contextlib.contextmanager
def sparse_tied_embedding_gradient(model: torch.nn.Module) -> Iterator[bool]:
    """While in the context, the input embedding of a model whose output layer shares its weight takes its gradient
    as a sparse tensor (yields whether it does). The weight's gradient is the same dense sum: the output layer's
    dense contribution plus the few rows the inputs used, added into it by autograd; what is saved is the dense
    vocabulary x hidden buffer the embedding's backward otherwise fills with zeros (0.67 GB on Gemma-3-270M, twice
    that at the peak of a backward pass). Untied embeddings are left dense: their gradient would stay sparse, which
    Adam refuses."""
    embedding, output = model.get_input_embeddings(), model.get_output_embeddings()
    tied = isinstance(embedding, torch.nn.Embedding) and output is not None and embedding.weight is output.weight
    previous = embedding.sparse if tied else None
    if tied:
        embedding.sparse = True
    try:
        yield tied
    finally:
        if tied:
            embedding.sparse = previous
