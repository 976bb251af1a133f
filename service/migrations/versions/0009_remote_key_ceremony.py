"""A remote (guardian-held) key ceremony (issue 18): ``election.key_mode`` (``custodial`` for every
election so far, ``guardian`` for one whose guardians made and keep their own keys), and the ceremony's
tables, public data only: ``key_ceremony`` (its round, failure and published context),
``ceremony_guardian`` (each slot's public key, confirmation and step times) and ``ceremony_backup`` (the
backups between guardians, as ciphertexts to their receivers, and each receiver's verification).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-12
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def _ts(name: str, **kw: object) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), **kw)  # type: ignore[arg-type]


def upgrade() -> None:
    op.add_column(
        "election",
        sa.Column("key_mode", sa.String(16), server_default="custodial", nullable=False),
    )
    if op.get_bind().dialect.name != "sqlite":  # SQLite adds no constraint to an existing table
        op.create_check_constraint(
            "election_key_mode_valid", "election", "key_mode IN ('custodial','guardian')"
        )
    op.create_table(
        "key_ceremony",
        sa.Column("election_id", BIG_ID, sa.ForeignKey("election.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("failure", sa.Text(), nullable=True),
        sa.Column("context", JSON, nullable=True),
        sa.Column("created_by", sa.String(128), nullable=True),
        _ts("created_at", server_default=sa.func.now(), nullable=False),
        _ts("context_published_at", nullable=True),
        _ts("ended_at", nullable=True),
        sa.CheckConstraint(
            "state IN ('keys','backups','confirm','complete','failed')", name="key_ceremony_state_valid"
        ),
    )
    op.create_table(
        "ceremony_guardian",
        sa.Column(
            "election_id",
            BIG_ID,
            sa.ForeignKey("key_ceremony.election_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("guardian_id", sa.String(128), primary_key=True),
        sa.Column("sequence_order", sa.Integer(), nullable=False),
        sa.Column("public_key", JSON, nullable=True),
        sa.Column("confirmation", JSON, nullable=True),
        _ts("key_posted_at", nullable=True),
        _ts("backups_posted_at", nullable=True),
        _ts("verifications_posted_at", nullable=True),
        _ts("confirmed_at", nullable=True),
        sa.UniqueConstraint("election_id", "sequence_order", name="uq_ceremony_guardian_order"),
    )
    op.create_table(
        "ceremony_backup",
        sa.Column(
            "election_id",
            BIG_ID,
            sa.ForeignKey("key_ceremony.election_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("sender_id", sa.String(128), primary_key=True),
        sa.Column("receiver_id", sa.String(128), primary_key=True),
        sa.Column("backup", JSON, nullable=False),
        _ts("posted_at", server_default=sa.func.now(), nullable=False),
        sa.Column("verified", sa.Boolean(), nullable=True),
        _ts("verified_at", nullable=True),
    )


def downgrade() -> None:
    op.drop_table("ceremony_backup")
    op.drop_table("ceremony_guardian")
    op.drop_table("key_ceremony")
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint("election_key_mode_valid", "election", type_="check")
    op.drop_column("election", "key_mode")
