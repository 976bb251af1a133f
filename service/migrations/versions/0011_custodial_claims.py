"""Custodial claims (issue 18): the custodial key ceremony no longer hands the admin every guardian's
credential file. Each private guardian record waits in ``custodial_claim``, sealed under the server
secret and bound to its election and guardian, until that guardian claims it with its own token and
passphrase; the claim erases the sealed record and keeps only when (and by which token's subject) it was
claimed, so a second claim is refused naming the first one's time.

Elections whose ceremony ran before this revision have no rows here: their credential files were handed
out by the ceremony itself.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "custodial_claim",
        sa.Column("election_id", BIG_ID, primary_key=True, autoincrement=False),
        sa.Column("guardian_id", sa.String(128), primary_key=True),
        sa.Column("sealed", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_by", sa.String(128), nullable=True),
        sa.ForeignKeyConstraint(
            ["election_id", "guardian_id"],
            ["guardian.election_id", "guardian.guardian_id"],
            ondelete="CASCADE",
            name="fk_custodial_claim_guardian",
        ),
        sa.CheckConstraint(
            "(sealed IS NULL) = (claimed_at IS NOT NULL)", name="custodial_claim_held_or_claimed"
        ),
    )


def downgrade() -> None:
    # Records still held are lost with the table: their guardians can no longer claim them.
    op.drop_table("custodial_claim")
