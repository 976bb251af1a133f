"""Guardian-held decryption: the guardians an admin declared missing (``election.missing_guardian_ids``)
and the staging table of shares guardians computed on their own machines (``share_upload``), held there
until the task that checks their proofs copies them into ``decryption_share`` / ``compensated_share``.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-20
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.add_column("election", sa.Column("missing_guardian_ids", JSON, nullable=True))
    op.create_table(
        "share_upload",
        sa.Column(
            "chunk_id",
            BIG_ID,
            sa.ForeignKey("election_center.id", ondelete="CASCADE"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("guardian_id", sa.String(128), primary_key=True),
        sa.Column("missing_guardian_id", sa.String(128), primary_key=True),
        sa.Column("election_id", BIG_ID, sa.ForeignKey("election.id", ondelete="CASCADE"), nullable=False),
        sa.Column("share", JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_index("ix_share_upload_election_id", "share_upload", ["election_id"])


def downgrade() -> None:
    op.drop_index("ix_share_upload_election_id", table_name="share_upload")
    op.drop_table("share_upload")
    op.drop_column("election", "missing_guardian_ids")
