"""Give a Ray worker's freed memory back to the system after each task.

A worker process outlives its tasks (Ray reuses it). A chunk's decoded ballots and big integers are
freed when the task returns, but glibc keeps the freed heap in the process, so an idle worker stayed at
200 to 260 MiB after a tally instead of its baseline of about 145 MiB (benchmarks/README.md), memory a
node's next tasks or its object store could use. ``malloc_trim(0)`` hands the free pages back; it is
glibc's, so elsewhere this does nothing.

The collection before it walked every object the worker holds, most of them its imports (modules,
classes, functions: over 100,000 objects, 50 to 100 ms a task, a second or more of CPU for a small
election's many short tasks). They live as long as the worker, so after the first task's collection they
are frozen (``gc.freeze``): later collections walk only what tasks made since. A frozen object is still
freed when its last reference goes; only a cycle among frozen objects would stay for good. So the freeze
waits for a task that ends without an exception in flight: a failing task's traceback still holds its
frames, and with them its chunk's ballots, which must not be frozen.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys
from functools import cache
from typing import Any


@cache
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


_frozen = False


def release_freed_memory() -> None:
    """Collect cycles, then return the freed heap to the system (glibc only)."""
    global _frozen
    gc.collect()
    if not _frozen and sys.exc_info()[0] is None:
        gc.freeze()  # what survived the first task's collection: the worker's imports and caches
        _frozen = True
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
