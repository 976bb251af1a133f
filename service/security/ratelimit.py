"""A per-caller sliding-window limit on job creation (in process: each API replica counts its own)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque

from service.errors import TooManyRequests


class RateLimiter:
    def __init__(self, per_minute: int, window_seconds: float = 60.0) -> None:
        self.per_window = per_minute
        self.window = window_seconds
        self._hits: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def check(self, key: str) -> None:
        """Count one request for ``key``; past the limit raise TooManyRequests (and do not count it)."""
        if self.per_window <= 0:
            return
        now = time.monotonic()
        with self._lock:
            hits = self._hits[key]
            while hits and hits[0] <= now - self.window:
                hits.popleft()
            if len(hits) >= self.per_window:
                retry = max(0.0, hits[0] + self.window - now)
                raise TooManyRequests(
                    f"more than {self.per_window} job creations a minute; retry in {retry:.0f} s"
                )
            hits.append(now)
