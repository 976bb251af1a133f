"""Threads inside one task: gmpy2 releases the GIL in its long operations, if each thread asks it to.

gmpy2 contexts are per thread, and a new thread starts from the defaults (GIL held during powmod), so
every pool thread sets ``allow_release_gil`` itself; compute.constants does it for the importing thread.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import gmpy2

_T = TypeVar("_T")
_R = TypeVar("_R")


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _release_gil() -> None:
    gmpy2.get_context().allow_release_gil = True


def thread_map(fn: Callable[[_T], _R], items: Sequence[_T], workers: int | None = None) -> list[_R]:
    """``[fn(x) for x in items]``, in ``workers`` threads when there is enough to share."""
    workers = default_workers() if workers is None else workers
    if workers <= 1 or len(items) < 2:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=workers, initializer=_release_gil) as pool:
        return list(pool.map(fn, items, chunksize=max(1, len(items) // (workers * 4))))
