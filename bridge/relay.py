"""The outbox relay: due outbox messages -> a publisher (RabbitMQ) with confirms, then marked sent.

Each round has three steps, and no database transaction is open while the broker is talked to:

1. In one short transaction, take up to ``batch_size`` due rows in fair-share order, at most ``window``
   chunks of a job in flight (``outbox.take_due``: the rest of a big job waits in the table, so a small
   job behind it waits for a window of its chunks, not all of them), and reserve them for ``lease``
   (``outbox.reserve``). Several relays may run: they take turns only for this step, so each row goes
   to one, and a reservation counts in its job's window, so the window stays exact.
2. Publish them with confirms (up to the publisher's confirm timeout), outside any transaction: a
   stalled broker holds no lock and keeps no other relay or embedded broker waiting.
3. In another short transaction (``outbox.end_reservation``), mark the confirmed ones sent, defer the
   refused ones (queue full, unroutable) by ``refused_delay``, and release the rest (the connection
   dropped mid-batch) to be due again at once.

A relay that dies between 1 and 3 leaves its rows reserved; they are due again once ``lease`` has passed
and are published again (at-least-once; the claim in PostgreSQL makes a duplicate harmless). So
``lease`` must outlast a publish: the publisher's connect and confirm waits (30 s each by default).
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
        lease: timedelta = timedelta(minutes=2),
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
        # How long a round's rows stay reserved: longer than any publish (see the module's note).
        self.lease = lease
        self._stop = threading.Event()
        self._last_prune = 0.0

    def run_once(self) -> int:
        """Publish one batch of due rows; how many were confirmed and marked sent."""
        token, messages = in_transaction(self.factory, self._reserve, attempts=3)
        if not messages:
            return 0
        # Until a confirm says otherwise, nothing went out: on any failure the rows are due again at once.
        result = Published([], [])
        try:
            result = self.publisher.publish(messages)
        except BrokerLost as exc:
            log.warning("broker connection lost while publishing (%s); will retry", exc)
            result = exc.published or result
        finally:
            self._end(token, [m.id for m in messages], result)
        if result.refused:
            log.warning(
                "broker refused %d message(s) (queue full or unroutable); kept pending", len(result.refused)
            )
        return len(result.sent)

    def _reserve(self, session: Session) -> tuple[str, list[outbox.Message]]:
        rows = outbox.take_due(session, self.batch_size, window=self.window)
        if not rows:
            return "", []
        return outbox.reserve(session, rows, self.lease), [outbox.message_of(r) for r in rows]

    def _end(self, token: str, reserved: list[int], result: Published) -> None:
        in_transaction(
            self.factory,
            lambda s: outbox.end_reservation(
                s, token, reserved, result.sent, result.refused, self.refused_delay
            ),
            attempts=3,
        )

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
