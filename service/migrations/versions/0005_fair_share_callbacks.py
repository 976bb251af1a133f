"""Fair share, stuck jobs and completion callbacks: job priority, progress time, the reconciler's note,
a callback URL, and the ``job_callback`` table (one row per notification of a job's end).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("election_job") as b:
        b.add_column(sa.Column("priority", sa.Integer(), nullable=False, server_default="0"))
        b.add_column(sa.Column("last_progress_at", sa.DateTime(timezone=True), nullable=True))
        b.add_column(sa.Column("reconciler_note", sa.Text(), nullable=True))
        b.add_column(sa.Column("reconciler_noted_at", sa.DateTime(timezone=True), nullable=True))
        b.add_column(sa.Column("callback_url", sa.String(length=2048), nullable=True))
        b.create_check_constraint("job_priority_range", "priority >= 0 AND priority <= 9")
    op.create_table(
        "job_callback",
        sa.Column("id", BIG_ID, primary_key=True, autoincrement=True),
        sa.Column(
            "job_id", sa.Uuid(), sa.ForeignKey("election_job.job_id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("job_status", sa.String(length=16), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("state IN ('PENDING','DELIVERED','FAILED')", name="job_callback_state_valid"),
    )
    op.create_index("ix_job_callback_job_id", "job_callback", ["job_id"])
    op.create_index("ix_job_callback_due", "job_callback", ["state", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_job_callback_due", table_name="job_callback")
    op.drop_index("ix_job_callback_job_id", table_name="job_callback")
    op.drop_table("job_callback")
    with op.batch_alter_table("election_job") as b:
        b.drop_constraint("job_priority_range", type_="check")
        b.drop_column("callback_url")
        b.drop_column("reconciler_noted_at")
        b.drop_column("reconciler_note")
        b.drop_column("last_progress_at")
        b.drop_column("priority")
