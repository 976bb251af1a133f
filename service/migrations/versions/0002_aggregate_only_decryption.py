"""Aggregate-only decryption and least key material.

- ``election_center`` gets the kinds ``slice`` and ``spoiled`` (decryption units), numbered within their
  kind; a ``chunk`` row may never hold a result again (check constraint).
- The sub-tally plaintexts and the shares already stored are removed: every chunk's ``result`` and every
  decryption or compensated share of a chunk or of the election row. (Those per-chunk counts published
  the votes of each small group of voters.) The aggregate's decryption (``election.result`` and the
  election row's ``result``) stays.
- Decryption and combine jobs of elections not yet decrypted were planned chunk by chunk: they are
  ended FAILED with a note; the guardians start their decryption again, which now covers only the
  aggregate and the spoiled ballots.
- ``guardian_key_escrow`` is rebuilt with one row per job holding only what the job needs; the old rows
  held whole private guardian records and are erased.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
DECRYPTION_JOBS = "('PARTIAL_DECRYPTION','COMPENSATED_DECRYPTION','COMBINE_DECRYPTION')"
NOTE = (
    "ended by migration 0002 (aggregate-only decryption): tally chunks are no longer decrypted; the"
    " guardians start their decryption again"
)
# SQLite reflects the old unique constraint without a name; batch mode names it by this convention.
CONVENTION = {"uq": "uq_%(table_name)s_%(column_0_name)s_%(column_1_name)s"}


def _escrow_table(new: bool) -> None:
    columns: list[sa.schema.SchemaItem] = [
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("election_id", BIG_ID, nullable=False),
        sa.Column("guardian_id", sa.String(length=128), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(["election_id"], ["election.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    ]
    if new:
        columns += [
            sa.Column("job_id", sa.Uuid(), nullable=False),
            sa.Column("missing_guardian_id", sa.String(length=128), nullable=True),
            sa.ForeignKeyConstraint(["job_id"], ["election_job.job_id"], ondelete="CASCADE"),
            sa.UniqueConstraint("job_id"),
        ]
    else:
        columns.append(sa.UniqueConstraint("election_id", "guardian_id"))
    op.create_table("guardian_key_escrow", *columns)
    if new:
        op.create_index(
            op.f("ix_guardian_key_escrow_election_id"), "guardian_key_escrow", ["election_id"], unique=False
        )


def upgrade() -> None:
    bind = op.get_bind()
    # Jobs planned chunk by chunk, in elections not decrypted yet: ended, their open tasks with them.
    undecided = (
        f"operation_type IN {DECRYPTION_JOBS} AND status <> 'FAILED'"
        " AND election_id IN (SELECT id FROM election WHERE state <> 'decrypted')"
    )
    bind.execute(
        sa.text(
            "UPDATE chunk_task SET state = 'FAILED', last_error = :note, lease_owner = NULL,"
            " lease_expires_at = NULL WHERE state IN ('PENDING','RUNNING')"
            f" AND job_id IN (SELECT job_id FROM election_job WHERE {undecided})"
        ),
        {"note": NOTE},
    )
    bind.execute(
        sa.text(
            "UPDATE election_job SET status = 'FAILED', error_message = :note,"
            " failed_chunks = total_chunks - processed_chunks, completed_at = CURRENT_TIMESTAMP"
            f" WHERE {undecided}"
        ),
        {"note": NOTE},
    )
    bind.execute(sa.text("UPDATE election_center SET result = NULL WHERE kind = 'chunk'"))
    old_rows = "SELECT id FROM election_center WHERE kind IN ('chunk','election')"
    bind.execute(sa.text(f"DELETE FROM decryption_share WHERE chunk_id IN ({old_rows})"))
    bind.execute(sa.text(f"DELETE FROM compensated_share WHERE chunk_id IN ({old_rows})"))

    with op.batch_alter_table("election_center", naming_convention=CONVENTION) as b:
        if bind.dialect.name == "postgresql":
            b.drop_constraint("election_center_election_id_chunk_number_key", type_="unique")
        else:
            b.drop_constraint("uq_election_center_election_id_chunk_number", type_="unique")
        b.create_unique_constraint("uq_election_center_kind_number", ["election_id", "kind", "chunk_number"])
        b.create_check_constraint(
            "election_center_kind_valid", "kind IN ('chunk','election','slice','spoiled')"
        )
        b.create_check_constraint("chunk_never_decrypted", "kind <> 'chunk' OR result IS NULL")

    op.drop_table("guardian_key_escrow")
    _escrow_table(new=True)


def downgrade() -> None:
    op.drop_index(op.f("ix_guardian_key_escrow_election_id"), table_name="guardian_key_escrow")
    op.drop_table("guardian_key_escrow")
    _escrow_table(new=False)
    bind = op.get_bind()
    units = "SELECT id FROM election_center WHERE kind IN ('slice','spoiled')"
    for table in ("chunk_task", "decryption_share", "compensated_share"):
        bind.execute(sa.text(f"DELETE FROM {table} WHERE chunk_id IN ({units})"))
    bind.execute(sa.text("DELETE FROM election_center WHERE kind IN ('slice','spoiled')"))
    with op.batch_alter_table("election_center") as b:
        b.drop_constraint("chunk_never_decrypted", type_="check")
        b.drop_constraint("election_center_kind_valid", type_="check")
        b.drop_constraint("uq_election_center_kind_number", type_="unique")
        b.create_unique_constraint(
            "election_center_election_id_chunk_number_key", ["election_id", "chunk_number"]
        )
