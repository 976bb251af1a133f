"""A per-caller sliding-window limit (in process: each API replica counts its own): job creations per token
subject, the public board's tracking-code lookups per client address."""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict, deque

from service.errors import TooManyRequests


class RateLimiter:
    MAX_KEYS = 10_000

    def __init__(self, per_minute: int, window_seconds: float = 60.0, what: str = "job creations") -> None:
        self.per_window = per_minute
        self.what = what
        self.window = window_seconds
        self._hits: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def check(self, key: str) -> None:
        """Count one request for ``key``; past the limit raise TooManyRequests (and do not count it)."""
        if self.per_window <= 0:
            return
        now = time.monotonic()
        with self._lock:
            if len(self._hits) > self.MAX_KEYS:  # many callers (public lookups by address): forget idle ones
                for k in [k for k, h in self._hits.items() if not h or h[-1] <= now - self.window]:
                    del self._hits[k]
            hits = self._hits[key]
            while hits and hits[0] <= now - self.window:
                hits.popleft()
            if len(hits) >= self.per_window:
                retry = max(1, math.ceil(hits[0] + self.window - now))
                raise TooManyRequests(
                    f"more than {self.per_window} {self.what} a minute; retry in {retry} s", retry_after=retry
                )
            hits.append(now)
