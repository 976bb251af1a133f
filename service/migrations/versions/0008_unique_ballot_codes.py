"""A tracking code names one ballot of its election: a unique index on ``ballot (election_id, code)``,
so two concurrent submissions cannot both store one code (issue 17: a valid ballot carrying another
voter's code was accepted, two cast ballots sharing one receipt).

An election that already holds a repeated code stops the upgrade, naming the election, the code and its
ballots, and for each whether its code chains from its own hash (the one that does not is the forgery).
Nothing is deleted on the operator's behalf: the ballots may already be counted in a tally, and which one
goes is a decision for the election's officials (``DELETE FROM ballot WHERE ...``, then upgrade again).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-10
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from compute.ballot import decode_submitted_ballot
from compute.validate import ballot_code_ok

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ux_ballot_election_code"
SHOWN = 20  # repeated codes named in the error


def _chains(payload: bytes) -> str:
    try:
        return "chains" if ballot_code_ok(decode_submitted_ballot(bytes(payload))) else "does not chain"
    except ValueError:
        return "does not decode"


def upgrade() -> None:
    bind = op.get_bind()
    repeated = bind.execute(
        sa.text(
            "SELECT election_id, code FROM ballot GROUP BY election_id, code HAVING count(*) > 1"
            " ORDER BY election_id, code"
        )
    ).all()
    if repeated:
        lines = []
        for election_id, code in repeated[:SHOWN]:
            rows = bind.execute(
                sa.text(
                    "SELECT object_id, payload FROM ballot WHERE election_id = :e AND code = :c ORDER BY seq"
                ),
                {"e": election_id, "c": code},
            ).all()
            held = ", ".join(f"{oid} (code {_chains(payload)})" for oid, payload in rows)
            lines.append(f"election {election_id}, tracking code {code}: ballots {held}")
        more = f"\n(and {len(repeated) - SHOWN} more)" if len(repeated) > SHOWN else ""
        raise RuntimeError(
            f"migration 0008: {len(repeated)} tracking code(s) are held by more than one ballot of an"
            " election; remove the forged ballot(s) (the one whose code does not chain) and upgrade again:\n"
            + "\n".join(lines)
            + more
        )
    op.create_index(INDEX, "ballot", ["election_id", "code"], unique=True)


def downgrade() -> None:
    op.drop_index(INDEX, table_name="ballot")
