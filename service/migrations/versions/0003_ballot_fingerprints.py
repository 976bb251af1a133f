"""Ballot fingerprints: one row per selection ciphertext of every stored ballot, unique per election.

Backfills the ballots already stored. A clone already among them (a ballot repeating a selection
ciphertext of an earlier one) does not stop the upgrade: the earlier ballot keeps the fingerprint, the
clone is logged by id, and ``amarvote record verify`` flags the pair in the election's record.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from compute.ballot import decode_submitted_ballot
from compute.fingerprints import repeat_message, selection_fingerprints

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
BATCH = 500  # ballots decoded at a time (a payload is tens of kilobytes)
LOOKUP_BATCH = 1000

log = logging.getLogger("amarvote.migrations")

# The tables as this revision knows them, not as the models may later describe them.
_ballot = sa.table(
    "ballot", sa.column("seq"), sa.column("election_id"), sa.column("object_id"), sa.column("payload")
)
_fingerprints = sa.table(
    "ballot_ciphertext", sa.column("election_id"), sa.column("fingerprint"), sa.column("ballot_seq")
)


def upgrade() -> None:
    op.create_table(
        "ballot_ciphertext",
        sa.Column("election_id", BIG_ID, autoincrement=False, nullable=False),
        sa.Column("fingerprint", sa.LargeBinary(), nullable=False),
        sa.Column("ballot_seq", BIG_ID, nullable=False),
        sa.ForeignKeyConstraint(["ballot_seq"], ["ballot.seq"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("election_id", "fingerprint"),
    )
    op.create_index("ix_ballot_ciphertext_ballot_seq", "ballot_ciphertext", ["ballot_seq"], unique=False)
    _backfill(op.get_bind())


def downgrade() -> None:
    op.drop_index("ix_ballot_ciphertext_ballot_seq", table_name="ballot_ciphertext")
    op.drop_table("ballot_ciphertext")


def _backfill(conn: sa.Connection) -> None:
    """Every stored ballot's fingerprints, in seq order (so the first ballot to hold one keeps it)."""
    last = 0
    repeats: dict[tuple[int, str, str], None] = {}  # (election, ballot id, id of the ballot it repeats)
    while rows := conn.execute(
        sa.select(_ballot.c.seq, _ballot.c.election_id, _ballot.c.object_id, _ballot.c.payload)
        .where(_ballot.c.seq > last)
        .order_by(_ballot.c.seq)
        .limit(BATCH)
    ).all():
        last = rows[-1].seq
        new: dict[tuple[int, bytes], tuple[int, str]] = {}
        for seq, election_id, object_id, payload in rows:
            try:
                fps = selection_fingerprints(decode_submitted_ballot(bytes(payload)))
            except (ValueError, struct.error) as exc:
                log.error(
                    "election %s: ballot %s does not decode (%s): no fingerprints",
                    election_id,
                    object_id,
                    exc,
                )
                continue
            for fp in fps:
                if (held := new.get((election_id, fp))) is not None:
                    repeats.setdefault((election_id, object_id, held[1]))
                else:
                    new[(election_id, fp)] = (seq, object_id)
        for election_id, fp, original in _already_stored(conn, list(new)):
            repeats.setdefault((election_id, new.pop((election_id, fp))[1], original))
        if new:
            conn.execute(
                sa.insert(_fingerprints),
                [
                    {"election_id": e, "fingerprint": fp, "ballot_seq": seq}
                    for (e, fp), (seq, _) in new.items()
                ],
            )
    for election_id, object_id, original in repeats:
        log.warning(
            "election %s: %s (left out of ballot_ciphertext)",
            election_id,
            repeat_message(object_id, original),
        )


def _already_stored(conn: sa.Connection, keys: list[tuple[int, bytes]]) -> list[tuple[int, bytes, str]]:
    """(election, fingerprint, holder's ballot id) of those keys stored by an earlier batch."""
    wanted = set(keys)
    fps = sorted({fp for _, fp in keys})
    found = []
    for i in range(0, len(fps), LOOKUP_BATCH):
        for election_id, fp, original in conn.execute(
            sa.select(_fingerprints.c.election_id, _fingerprints.c.fingerprint, _ballot.c.object_id)
            .join(_ballot, _ballot.c.seq == _fingerprints.c.ballot_seq)
            .where(_fingerprints.c.fingerprint.in_(fps[i : i + LOOKUP_BATCH]))
        ):
            if (election_id, bytes(fp)) in wanted:
                found.append((election_id, bytes(fp), original))
    return found
