"""The outbox relay: due outbox messages -> a publisher (RabbitMQ) with confirms, then marked sent.

Each round, in one transaction: take up to ``batch_size`` due rows (``FOR UPDATE SKIP LOCKED``: several
relays may run, each row goes to one) in fair-share order, at most ``window`` chunks of a job in flight
(``outbox.take_due``: the rest of a big job waits in the table, so a small job behind it waits for a
window of its chunks, not all of them), publish them, mark the confirmed ones sent and defer the refused
ones (queue full, unroutable) by ``refused_delay``. If the broker connection drops mid-batch, what was
confirmed is marked sent and the rest stays pending; a crash between publish and commit publishes those
again (at-least-once; the claim in PostgreSQL makes a duplicate harmless).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from sqlalchemy.orm import Session

from bridge.broker import BrokerLost, Published, Publisher
from service.db.session import SessionFactory, in_transaction
from service.jobs import outbox

log = logging.getLogger(__name__)


class Relay:
    def __init__(
        self,
        factory: SessionFactory,
        publisher: Publisher,
        *,
        batch_size: int = 200,
        poll_interval: float = 0.5,
        keep_sent: timedelta = timedelta(days=1),
        refused_delay: timedelta = timedelta(seconds=5),
        window: int | None = None,
    ) -> None:
        self.factory = factory
        self.publisher = publisher
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.keep_sent = keep_sent
        self.refused_delay = refused_delay
        # Fair share: at most this many chunks of a job queued or running (None: publish all due rows).
        # A chunk that ends frees its slot; the next round (every poll_interval) fills it.
        self.window = window
        self._stop = threading.Event()
        self._last_prune = 0.0

    def run_once(self) -> int:
        """Publish one batch of due rows; how many were confirmed and marked sent."""
        return in_transaction(self.factory, self._publish_batch, attempts=3)

    def _publish_batch(self, session: Session) -> int:
        rows = outbox.take_due(session, self.batch_size, window=self.window)
        if not rows:
            return 0
        try:
            result = self.publisher.publish([outbox.message_of(r) for r in rows])
        except BrokerLost as exc:
            log.warning("broker connection lost while publishing (%s); will retry", exc)
            result = exc.published or Published([], [])
        by_id = {r.id: r for r in rows}
        outbox.mark_sent(session, [by_id[i] for i in result.sent])
        if result.refused:
            outbox.defer(session, [by_id[i] for i in result.refused], self.refused_delay)
            log.warning(
                "broker refused %d message(s) (queue full or unroutable); kept pending", len(result.refused)
            )
        return len(result.sent)

    def prune(self) -> int:
        """Delete rows sent longer ago than ``keep_sent`` (the reconciler only looks at recent ones)."""
        return in_transaction(self.factory, lambda s: outbox.prune(s, self.keep_sent))

    def run(self) -> None:
        """Relay until :meth:`stop`; survives broker and database outages."""
        delay = self.poll_interval
        while not self._stop.is_set():
            try:
                n = self.run_once()
                delay = self.poll_interval
                if time.monotonic() - self._last_prune > 3600:
                    self._last_prune = time.monotonic()
                    self.prune()
            except Exception as exc:
                log.warning("relay round failed (%s); retrying", type(exc).__name__)
                self.publisher.close()
                n = 0
                delay = min(delay * 2, 10.0)
            if n < self.batch_size:
                self._stop.wait(delay)
        self.publisher.close()

    def stop(self) -> None:
        self._stop.set()
