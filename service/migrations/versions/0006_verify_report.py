"""The VERIFY operation: the ``verify_report`` table, one row per task of a verify job (what its unit's
checks found, public data only), read by the job's finalizer. The operation itself needs no schema
change (``election_job.operation_type`` and ``outbox.operation`` are free strings).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "verify_report",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column(
            "job_id", sa.Uuid(), sa.ForeignKey("election_job.job_id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column(
            "chunk_id", BIG_ID, sa.ForeignKey("election_center.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("ballots", sa.Integer(), nullable=False),
        sa.Column("cast_count", sa.Integer(), nullable=False),
        sa.Column("spoiled_count", sa.Integer(), nullable=False),
        sa.Column("problems", JSON, nullable=False),
        sa.Column("products", JSON, nullable=False),
        sa.Column("prefixes", sa.LargeBinary(), nullable=False),
        sa.Column("available_sets", JSON, nullable=False),
        sa.Column("failed_ballots", JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.UniqueConstraint("job_id", "chunk_id", name="uq_verify_report_job_chunk"),
    )


def downgrade() -> None:
    op.drop_table("verify_report")
