"""Encrypted ballots awaiting the voter's decision (cast or challenge), in this API process's memory only.

Whoever holds the master nonce of a cast ballot can prove how it voted, so the nonce of a ballot that may
still be cast is never put at rest: not in the database, a file, a message or a log. A pending ballot lives
here, in one process, for a bounded time; an expiry, a restart or another replica forgets it and the voter
encrypts again. The bound keeps the memory in check: an entry holds its ballot in the compact stored form,
about 4 KiB per selection (placeholders included; 38 KiB for a ballot of the demo's 9), half what the
decoded objects take.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from service.elections.crypto import Encryption, decode, encode
from service.errors import Conflict, TooManyRequests


@dataclass(frozen=True, slots=True)
class PendingBallot:
    election_id: int
    object_id: str
    payload: bytes  # the encrypted ballot, state UNKNOWN, no nonce
    nonce: str = field(repr=False)
    plaintext: dict[str, Any] = field(repr=False)
    expires_at: datetime = field(kw_only=True)  # wall clock, told to the voter
    deadline: float = field(kw_only=True)  # the store's clock, which decides expiry

    def encryption(self) -> Encryption:
        return Encryption(decode(self.payload), self.nonce, self.plaintext)


class PendingBallots:
    """A bounded, thread-safe map (election, ballot id) → pending ballot with one time-to-live.

    Every entry lives the same TTL, so insertion order is expiry order and a purge only looks at the
    oldest entries. Expired entries are dropped on every access and by ``purge`` (the app calls it
    periodically, so an idle process does not keep nonces past their time).
    """

    def __init__(
        self, ttl_seconds: float, capacity: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if ttl_seconds <= 0 or capacity < 1:
            raise ValueError("a pending-ballot store needs a positive time-to-live and capacity")
        self.ttl_seconds = ttl_seconds
        self.capacity = capacity
        self._clock = clock
        self._entries: OrderedDict[tuple[int, str], PendingBallot] = OrderedDict()
        self._lock = threading.Lock()

    def hold(self, election_id: int, encryption: Encryption) -> PendingBallot:
        key = (election_id, encryption.object_id)
        payload, _code = encode(encryption.ballot)
        with self._lock:
            now = self._purge(self._clock())
            if key in self._entries:
                raise Conflict(
                    f"ballot {encryption.object_id} is already pending a decision: cast or challenge it,"
                    " or use another ballot id"
                )
            if len(self._entries) >= self.capacity:
                raise TooManyRequests(
                    f"{self.capacity} ballots are pending a decision on this API process, the most it holds:"
                    " retry later, or encrypt with action 'cast' or 'spoil' to decide at once"
                )
            entry = PendingBallot(
                election_id,
                encryption.object_id,
                payload,
                encryption.nonce,
                encryption.plaintext,
                expires_at=datetime.now(UTC) + timedelta(seconds=self.ttl_seconds),
                deadline=now + self.ttl_seconds,
            )
            self._entries[key] = entry
            return entry

    def take(self, election_id: int, ballot_id: str) -> PendingBallot | None:
        """Remove and return the live entry; None if it is unknown or expired. Taking is atomic, so of
        two concurrent decisions on one ballot only one gets it."""
        with self._lock:
            self._purge(self._clock())
            return self._entries.pop((election_id, ballot_id), None)

    def purge(self) -> None:
        with self._lock:
            self._purge(self._clock())

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            self._purge(self._clock())
            return len(self._entries)

    def _purge(self, now: float) -> float:
        while self._entries:
            key, oldest = next(iter(self._entries.items()))
            if oldest.deadline > now:
                break
            del self._entries[key]
        return now
