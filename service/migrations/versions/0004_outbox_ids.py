"""The outbox holds ids in columns (operation, job, chunk task), not a RabbitMQ routing key and body.

Only the RabbitMQ broker maps an operation to a routing key and builds the message body; the reconciler
finds a task's messages by the indexed ``task_id`` instead of a JSON path into the body. Rows written
before are converted (their body carried the same three ids).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_T = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
ROUTING_KEYS = {
    "TALLY": "election.tally",
    "PARTIAL_DECRYPTION": "election.decryption",
    "COMPENSATED_DECRYPTION": "election.compensated.decryption",
    "COMBINE_DECRYPTION": "election.combine",
}


def upgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("outbox") as b:
        b.add_column(sa.Column("operation", sa.String(length=32), nullable=True))
        b.add_column(sa.Column("job_id", sa.Uuid(), nullable=True))
        b.add_column(sa.Column("task_id", sa.BigInteger(), nullable=True))
    if bind.dialect.name == "postgresql":
        bind.execute(
            sa.text(
                "UPDATE outbox SET operation = body->>'operation', job_id = (body->>'job_id')::uuid,"
                " task_id = (body->>'task_id')::bigint"
            )
        )
    else:
        # SQLite keeps a Uuid as 32 hex digits without dashes.
        bind.execute(
            sa.text(
                "UPDATE outbox SET operation = json_extract(body, '$.operation'),"
                " job_id = replace(json_extract(body, '$.job_id'), '-', ''),"
                " task_id = json_extract(body, '$.task_id')"
            )
        )
    # A row that never carried the three ids could not have been consumed: nothing to keep.
    bind.execute(sa.text("DELETE FROM outbox WHERE operation IS NULL OR job_id IS NULL OR task_id IS NULL"))
    with op.batch_alter_table("outbox") as b:
        b.alter_column("operation", existing_type=sa.String(length=32), nullable=False)
        b.alter_column("job_id", existing_type=sa.Uuid(), nullable=False)
        b.alter_column("task_id", existing_type=sa.BigInteger(), nullable=False)
        b.drop_column("routing_key")
        b.drop_column("body")
        b.create_index("ix_outbox_task_id", ["task_id"], unique=False)


def downgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("outbox") as b:
        b.add_column(sa.Column("routing_key", sa.String(length=64), nullable=True))
        b.add_column(sa.Column("body", JSON_T, nullable=True))
    for operation, key in ROUTING_KEYS.items():
        if bind.dialect.name == "postgresql":
            body = "jsonb_build_object('job_id', job_id::text, 'task_id', task_id, 'operation', operation)"
        else:
            body = "json_object('job_id', job_id, 'task_id', task_id, 'operation', operation)"
        bind.execute(
            sa.text(f"UPDATE outbox SET routing_key = :k, body = {body} WHERE operation = :o"),
            {"k": key, "o": operation},
        )
    with op.batch_alter_table("outbox") as b:
        b.drop_index("ix_outbox_task_id")
        b.alter_column("routing_key", existing_type=sa.String(length=64), nullable=False)
        b.alter_column("body", existing_type=JSON_T, nullable=False)
        b.drop_column("task_id")
        b.drop_column("job_id")
        b.drop_column("operation")
