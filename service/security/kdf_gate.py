"""How many credential files a process opens at once: each argon2 run takes ``kdf_memory_kib`` (up to
256 MiB for a file that asks for it) and a core, so a burst of decryption requests must queue here,
briefly, and otherwise be told to come back, rather than exhaust the API's memory."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from service.errors import Unavailable
from service.settings import Settings


class KdfGate:
    def __init__(self, concurrency: int, wait_seconds: float) -> None:
        if concurrency < 1:
            raise ValueError("kdf_concurrency must be at least 1")
        self.concurrency = concurrency
        self.wait_seconds = wait_seconds
        self._slots = threading.BoundedSemaphore(concurrency)

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one of the slots for the block; Unavailable (503) if none frees up in ``wait_seconds``."""
        if not self._slots.acquire(timeout=self.wait_seconds):
            raise Unavailable(
                f"all {self.concurrency} credential-opening slots are busy; retry shortly",
                retry_after=max(1, math.ceil(self.wait_seconds)),
            )
        try:
            yield
        finally:
            self._slots.release()


@lru_cache(maxsize=8)
def _gate(concurrency: int, wait_seconds: float) -> KdfGate:
    return KdfGate(concurrency, wait_seconds)


def kdf_gate(settings: Settings) -> KdfGate:
    """The process's one gate for these settings (a process serves one configuration; every app and
    pipeline in it made from the same settings shares the same slots)."""
    return _gate(settings.kdf_concurrency, settings.kdf_wait_seconds)
