"""The spoiled ballots' decryptions live in their ``spoiled`` units only: ``election.result`` is the
decrypted tally alone. Gathered into that one row they passed PostgreSQL's 256 MB bound on a jsonb value
at about 800 spoiled ballots of three contests (the 100,000-ballot benchmark, 1% spoiled), and every
reader held them all. The units already hold them (the combine writes each there first), so this only
drops the copy.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("UPDATE election SET result = result - 'spoiled_ballots' WHERE result ? 'spoiled_ballots'")
    else:
        op.execute(
            "UPDATE election SET result = json_remove(result, '$.spoiled_ballots')"
            " WHERE json_extract(result, '$.spoiled_ballots') IS NOT NULL"
        )


def downgrade() -> None:
    # The copy is not put back: every reader takes the decryptions from the units.
    pass
