"""Outbox reservations (issue 20): the relay publishes outside any transaction.

The relay used to hold its turn (an advisory lock) and its rows' locks through the RabbitMQ publish and
the wait for confirms. It now reserves due rows in a short transaction (``reserved_until``,
``reserved_by``), publishes with no transaction open, then marks them sent; a relay that dies in between
leaves rows that are due again once ``reserved_until`` has passed. Existing rows have no reservation.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as b:
        b.add_column(sa.Column("reserved_until", sa.DateTime(timezone=True), nullable=True))
        b.add_column(sa.Column("reserved_by", sa.String(length=32), nullable=True))


def downgrade() -> None:
    # A reservation still open is dropped: its rows are due at once (published again, consumers dedupe).
    with op.batch_alter_table("outbox") as b:
        b.drop_column("reserved_by")
        b.drop_column("reserved_until")
