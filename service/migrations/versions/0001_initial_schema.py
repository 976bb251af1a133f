"""Initial schema: every table of service.db.models (server defaults via func.now(): SQLite too).

Revision ID: 0001
Revises:
Create Date: 2026-11-29 01:49:29.048291
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The same variants as the models: JSONB on PostgreSQL, BIGINT keys that autoincrement on SQLite.
JSON_T = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "election",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("manifest", JSON_T, nullable=False),
        sa.Column("manifest_version", sa.Integer(), nullable=False),
        sa.Column("manifest_hash", sa.String(length=80), nullable=True),
        sa.Column("number_of_guardians", sa.Integer(), nullable=False),
        sa.Column("quorum", sa.Integer(), nullable=False),
        sa.Column("context", JSON_T, nullable=True),
        sa.Column("encrypted_tally", JSON_T, nullable=True),
        sa.Column("result", JSON_T, nullable=True),
        sa.Column("created_by", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint(
            "state IN ('setup','open','closed','tallied','decrypted')", name="election_state_valid"
        ),
        sa.CheckConstraint("quorum >= 1 AND quorum <= number_of_guardians", name="quorum_range"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "outbox",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("routing_key", sa.String(length=64), nullable=False),
        sa.Column("body", JSON_T, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("available_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_outbox_unsent", "outbox", ["sent_at", "available_at"], unique=False)
    op.create_table(
        "ballot",
        sa.Column("seq", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("election_id", BIG_ID, nullable=False),
        sa.Column("object_id", sa.String(length=256), nullable=False),
        sa.Column("state", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=80), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("state IN (1, 2)", name="ballot_state_valid"),
        sa.ForeignKeyConstraint(["election_id"], ["election.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("election_id", "object_id"),
    )
    op.create_index("ix_ballot_election_seq", "ballot", ["election_id", "seq"], unique=False)
    op.create_table(
        "election_job",
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("election_id", BIG_ID, nullable=False),
        sa.Column("operation_type", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("total_chunks", sa.Integer(), nullable=False),
        sa.Column("processed_chunks", sa.Integer(), nullable=False),
        sa.Column("failed_chunks", sa.Integer(), nullable=False),
        sa.Column("parent_job_id", sa.Uuid(), nullable=True),
        sa.Column("guardian_id", sa.String(length=128), nullable=True),
        sa.Column("missing_guardian_id", sa.String(length=128), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("metadata", JSON_T, nullable=True),
        sa.CheckConstraint(
            "status IN ('QUEUED','IN_PROGRESS','COMPLETED','FAILED')", name="job_status_valid"
        ),
        sa.CheckConstraint("processed_chunks + failed_chunks <= total_chunks", name="job_progress_bounded"),
        sa.ForeignKeyConstraint(["election_id"], ["election.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["parent_job_id"],
            ["election_job.job_id"],
        ),
        sa.PrimaryKeyConstraint("job_id"),
    )
    op.create_index(op.f("ix_election_job_election_id"), "election_job", ["election_id"], unique=False)
    op.create_table(
        "guardian",
        sa.Column("election_id", BIG_ID, nullable=False),
        sa.Column("guardian_id", sa.String(length=128), nullable=False),
        sa.Column("sequence_order", sa.Integer(), nullable=False),
        sa.Column("public_record", JSON_T, nullable=False),
        sa.ForeignKeyConstraint(["election_id"], ["election.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("election_id", "guardian_id"),
        sa.UniqueConstraint("election_id", "sequence_order"),
    )
    op.create_table(
        "guardian_key_escrow",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("election_id", BIG_ID, nullable=False),
        sa.Column("guardian_id", sa.String(length=128), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(["election_id"], ["election.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("election_id", "guardian_id"),
    )
    op.create_table(
        "election_center",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("election_id", BIG_ID, nullable=False),
        sa.Column("tally_job_id", sa.Uuid(), nullable=False),
        sa.Column("chunk_number", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=True),
        sa.Column("last_seq", sa.BigInteger(), nullable=True),
        sa.Column("ballot_count", sa.Integer(), nullable=False),
        sa.Column("cast_count", sa.Integer(), nullable=True),
        sa.Column("spoiled_ids", JSON_T, nullable=True),
        sa.Column("encrypted_tally", JSON_T, nullable=True),
        sa.Column("result", JSON_T, nullable=True),
        sa.ForeignKeyConstraint(["election_id"], ["election.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["tally_job_id"],
            ["election_job.job_id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("election_id", "chunk_number"),
    )
    op.create_table(
        "chunk_task",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("chunk_id", BIG_ID, nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("state IN ('PENDING','RUNNING','DONE','FAILED')", name="task_state_valid"),
        sa.ForeignKeyConstraint(["chunk_id"], ["election_center.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["job_id"], ["election_job.job_id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "chunk_id"),
    )
    op.create_index("ix_chunk_task_state", "chunk_task", ["state", "lease_expires_at"], unique=False)
    op.create_table(
        "compensated_share",
        sa.Column("chunk_id", BIG_ID, nullable=False),
        sa.Column("guardian_id", sa.String(length=128), nullable=False),
        sa.Column("missing_guardian_id", sa.String(length=128), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("share", JSON_T, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(["chunk_id"], ["election_center.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["election_job.job_id"],
        ),
        sa.PrimaryKeyConstraint("chunk_id", "guardian_id", "missing_guardian_id"),
    )
    op.create_table(
        "decryption_share",
        sa.Column("chunk_id", BIG_ID, nullable=False),
        sa.Column("guardian_id", sa.String(length=128), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("share", JSON_T, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(["chunk_id"], ["election_center.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["election_job.job_id"],
        ),
        sa.PrimaryKeyConstraint("chunk_id", "guardian_id"),
    )


def downgrade() -> None:
    op.drop_table("decryption_share")
    op.drop_table("compensated_share")
    op.drop_index("ix_chunk_task_state", table_name="chunk_task")
    op.drop_table("chunk_task")
    op.drop_table("election_center")
    op.drop_table("guardian_key_escrow")
    op.drop_table("guardian")
    op.drop_index(op.f("ix_election_job_election_id"), table_name="election_job")
    op.drop_table("election_job")
    op.drop_index("ix_ballot_election_seq", table_name="ballot")
    op.drop_table("ballot")
    op.drop_index("ix_outbox_unsent", table_name="outbox")
    op.drop_table("outbox")
    op.drop_table("election")
