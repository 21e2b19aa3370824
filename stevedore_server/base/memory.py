"""A process's resident memory, as Linux reports it: what the memory budget and the metrics count."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def resident_bytes(pid: int | None = None) -> int | None:
    """The resident memory of process ``pid`` (None: this one), from ``/proc``; None where it cannot be read (the
    process is gone, or the system has no ``/proc``)."""
    try:
        pages = int(Path(f"/proc/{pid or 'self'}/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


@functools.cache
def _libc() -> Any:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def return_freed_memory() -> None:
    """Hand the memory this process has freed back to the system (glibc's ``malloc_trim``; elsewhere nothing).

    After an unloaded model's arrays are freed, the allocator keeps their pages for later allocations: the
    process's resident memory stays as high (a container's memory limit still counts it), and the next model
    loaded would reuse them and seem to take nothing."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


@dataclass
class Growth:
    """How much this process grew across a block (``growth``): bytes, once the block has ended."""

    bytes: int | None = None


@contextlib.contextmanager
def growth(traced: bool = True) -> Iterator[Growth]:
    """Measure how much this process grows while the block runs: the larger of its resident memory's growth
    (what native libraries allocate) and, if ``traced``, of what Python and NumPy allocated and still hold
    (``tracemalloc``). Resident memory alone misses an allocation that reuses pages the allocator kept from memory
    freed before (an unloaded model's); traced memory alone misses native allocations. Tracing slows allocations
    while it runs (a small model's load takes about twice as long): for a load under a memory budget only."""
    measured = Growth()
    tracing = traced and not tracemalloc.is_tracing()
    if tracing:
        tracemalloc.start()
    traced_before = tracemalloc.get_traced_memory()[0]
    resident_before = resident_bytes()
    try:
        yield measured
    finally:
        allocated = tracemalloc.get_traced_memory()[0] - traced_before
        if tracing:
            tracemalloc.stop()
        resident_after = resident_bytes()
        resident = resident_after - resident_before if resident_after and resident_before else 0
        measured.bytes = max(allocated, resident, 0)
