"""The escrow sweeper: erases key escrows that outlived their job, and nothing else.

A job's escrow is erased when the job completes (``service.jobs.finalize``); a FAILED decryption job keeps
its escrow for a re-drive for ``retention`` (``escrow_retention_hours``), no longer. Every ``interval``
this loop erases what is past that (``service.elections.escrow.erase_expired``), so no escrow outlives
its use because nobody came back for it.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from bridge.loop import Loop
from service.db.session import SessionFactory, in_transaction
from service.elections.escrow import erase_expired

log = logging.getLogger(__name__)


def sweep_escrows(factory: SessionFactory, *, retention: timedelta) -> int:
    """Erase the key escrows of jobs that ended (FAILED ones once ``retention`` has passed)."""
    n = in_transaction(factory, lambda s: erase_expired(s, retention))
    if n:
        log.info("erased %d expired key escrow(s)", n)
    return n


class EscrowSweeper(Loop):
    """Every ``interval``: the expired key escrows erased."""

    def __init__(
        self, factory: SessionFactory, *, retention: timedelta = timedelta(hours=24), interval: float = 30.0
    ) -> None:
        super().__init__(interval)
        self.factory = factory
        self.retention = retention

    def run_once(self) -> int:
        return sweep_escrows(self.factory, retention=self.retention)
