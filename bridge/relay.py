"""The outbox relay: publishes the messages the service wrote in its transactions.

Each round claims a batch of unsent rows whose ``available_at`` has passed with
``FOR UPDATE SKIP LOCKED`` (so several relays share the work without publishing a row twice),
publishes each with publisher confirms and ``mandatory=True``, and marks a row sent only after
its confirm, in the same transaction that holds the row lock. A nack (queue full:
``reject-publish``), an unroutable message (no queue bound) or a lost connection leaves the row
pending: the relay reconnects and tries it again next round. A crash between the confirm and the
commit publishes that row again later; consumers are idempotent, so that costs only work.

On SQLite (embedded mode) there is no relay: the embedded runner reads the outbox directly.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import timedelta

import pika
from pika.adapters.blocking_connection import BlockingChannel, BlockingConnection
from pika.exceptions import AMQPError, NackError, UnroutableError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from bridge import topology
from bridge.db import SessionFactory, in_transaction
from service.db.models import Outbox
from service.jobs.transitions import utcnow

log = logging.getLogger(__name__)


class OutboxRelay:
    def __init__(
        self,
        factory: SessionFactory,
        amqp_url: str,
        *,
        batch_size: int = 200,
        poll_interval: float = 0.5,
        keep_sent: timedelta = timedelta(days=1),
        refused_delay: timedelta = timedelta(seconds=5),
    ) -> None:
        self.factory = factory
        self.amqp_url = amqp_url
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.keep_sent = keep_sent
        self.refused_delay = refused_delay
        self._connection: BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._stop = threading.Event()
        self._last_prune = 0.0

    # -- connection ---------------------------------------------------------------------------
    def _ensure_channel(self) -> BlockingChannel:
        if self._channel is not None and self._channel.is_open:
            return self._channel
        self.close()
        self._connection = pika.BlockingConnection(pika.URLParameters(self.amqp_url))
        channel = self._connection.channel()
        topology.declare(channel)
        channel.confirm_delivery()
        self._channel = channel
        return channel

    def close(self) -> None:
        conn, self._connection, self._channel = self._connection, None, None
        if conn is not None and conn.is_open:
            try:
                conn.close()
            except AMQPError:
                pass

    # -- one round ----------------------------------------------------------------------------
    def run_once(self) -> int:
        """Publish one batch of due rows; returns how many were confirmed and marked sent."""
        return in_transaction(self.factory, self._publish_batch, attempts=3)

    def _publish_batch(self, session: Session) -> int:
        rows = list(
            session.execute(
                select(Outbox)
                .where(Outbox.sent_at.is_(None), Outbox.available_at <= utcnow())
                .order_by(Outbox.available_at, Outbox.id)
                .limit(self.batch_size)
                .with_for_update(skip_locked=True)
            ).scalars()
        )
        if not rows:
            return 0
        sent = refused = 0
        try:
            channel = self._ensure_channel()
            for row in rows:
                try:
                    # On a confirming channel basic_publish blocks until the broker confirms this
                    # message, raising NackError (queue full) or UnroutableError (nothing bound).
                    channel.basic_publish(
                        topology.EXCHANGE,
                        row.routing_key,
                        json.dumps(row.body, separators=(",", ":")).encode(),
                        pika.BasicProperties(
                            content_type="application/json",
                            delivery_mode=pika.DeliveryMode.Persistent,
                            message_id=f"outbox-{row.id}",
                        ),
                        mandatory=True,
                    )
                except (NackError, UnroutableError):
                    # Stays pending, tried again a little later; other rows (other queues) still go.
                    row.available_at = utcnow() + self.refused_delay
                    refused += 1
                    continue
                row.sent_at = utcnow()
                sent += 1
        except AMQPError as exc:
            log.warning("broker connection lost while publishing (%s); reconnecting", type(exc).__name__)
            self.close()
        if refused:
            log.warning("broker refused %d outbox row(s) (queue full or unroutable); kept pending", refused)
        return sent

    def prune(self) -> int:
        """Delete rows sent longer ago than ``keep_sent`` (the reconciler only looks at recent ones)."""
        cutoff = utcnow() - self.keep_sent
        return in_transaction(
            self.factory,
            lambda s: s.execute(delete(Outbox).where(Outbox.sent_at < cutoff)).rowcount or 0,
        )

    # -- loop ---------------------------------------------------------------------------------
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
                self.close()
                n = 0
                delay = min(delay * 2, 10.0)
            if n < self.batch_size:
                self._stop.wait(delay)
        self.close()

    def stop(self) -> None:
        self._stop.set()


def main() -> None:
    """``python -m bridge.relay``: see :mod:`bridge.runner`."""
    import logging as _logging

    from bridge.runner import run_relay
    from service.settings import get_settings

    _logging.basicConfig(level=_logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    run_relay(get_settings())


if __name__ == "__main__":
    main()
