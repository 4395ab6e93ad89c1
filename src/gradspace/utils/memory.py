"""Giving freed memory back to the operating system between jobs that run one after another in one process."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc


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
