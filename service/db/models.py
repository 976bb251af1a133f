"""The tables: PostgreSQL holds the truth about elections, ballots, jobs and their chunk tasks.

Names kept from the seed so an AmarVote operator recognises them: ``election_job`` (one row per
job) and ``election_center`` (one row per unit of work of an election's tally and decryption: see
``ChunkKind``). Every other table hangs off these. The same models run on SQLite for the embedded
default.

Ballot secrecy lives in this layout: a ``chunk`` row's encrypted sub-tally is never decrypted (it has
no decryption shares and no result); only the ``election`` row's aggregate (through its ``slice``
rows) and the spoiled ballots (through ``spoiled`` rows) are.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# BIGINT keys that still autoincrement on SQLite (which only does so for INTEGER PRIMARY KEY).
BigId = BigInteger().with_variant(Integer, "sqlite")
Json = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    pass


class ElectionState(enum.StrEnum):
    SETUP = "setup"
    OPEN = "open"
    CLOSED = "closed"
    TALLIED = "tallied"
    DECRYPTED = "decrypted"


class BallotState(enum.IntEnum):
    """As the reference's BallotBoxState."""

    CAST = 1
    SPOILED = 2


class OperationType(enum.StrEnum):
    TALLY = "TALLY"
    PARTIAL_DECRYPTION = "PARTIAL_DECRYPTION"
    COMPENSATED_DECRYPTION = "COMPENSATED_DECRYPTION"
    COMBINE_DECRYPTION = "COMBINE_DECRYPTION"
    VERIFY = "VERIFY"  # the election's record checked from the database (public data only)


class JobStatus(enum.StrEnum):
    QUEUED = "QUEUED"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


class TaskState(enum.StrEnum):
    PENDING = "PENDING"  # waiting for a message to be taken (or for its backoff to pass)
    RUNNING = "RUNNING"  # leased by a bridge until lease_expires_at
    DONE = "DONE"
    FAILED = "FAILED"  # attempts exhausted; an operator may re-drive it


class ChunkKind(enum.StrEnum):
    CHUNK = "chunk"  # a range of ballots, tallied into an encrypted sub-tally that stays encrypted
    ELECTION = "election"  # the aggregate: the product of the chunk tallies, and its decryption
    SLICE = "slice"  # some selections of the aggregate, decrypted by one task of each guardian
    SPOILED = "spoiled"  # a run of spoiled ballots, decrypted by one task of each guardian


def _now() -> Any:
    return func.now()


class Election(Base):
    __tablename__ = "election"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(256))
    state: Mapped[str] = mapped_column(String(16), default=ElectionState.SETUP.value)
    manifest: Mapped[dict[str, Any]] = mapped_column(Json)  # the reference's manifest JSON
    manifest_version: Mapped[int] = mapped_column(Integer, default=1)
    manifest_hash: Mapped[str | None] = mapped_column(String(80))
    number_of_guardians: Mapped[int] = mapped_column(Integer)
    quorum: Mapped[int] = mapped_column(Integer)
    context: Mapped[dict[str, Any] | None] = mapped_column(Json)  # the reference's context JSON
    # Who holds the guardians' secrets: ``custodial`` (the service's one-process key ceremony, each private
    # record handed back sealed) or ``guardian`` (a remote ceremony: each guardian made and keeps its own).
    key_mode: Mapped[str] = mapped_column(String(16), default="custodial", server_default="custodial")
    # The product of the chunk tallies (reference CiphertextTally JSON) and its decryption.
    encrypted_tally: Mapped[dict[str, Any] | None] = mapped_column(Json)
    result: Mapped[dict[str, Any] | None] = mapped_column(Json)
    # Guardian-held decryption (migration 0010): the guardians the admin declared missing after the tally
    # (a list of ids; NULL: none declared). service.elections.uploads owns it.
    missing_guardian_ids: Mapped[list[str] | None] = mapped_column(Json)
    created_by: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=_now(), onupdate=_now()
    )

    __table_args__ = (
        CheckConstraint("quorum >= 1 AND quorum <= number_of_guardians", name="quorum_range"),
        CheckConstraint(
            "state IN ('setup','open','closed','tallied','decrypted')", name="election_state_valid"
        ),
        CheckConstraint("key_mode IN ('custodial','guardian')", name="election_key_mode_valid"),
    )


class Guardian(Base):
    """Public records only: a guardian's private record leaves the service once, sealed."""

    __tablename__ = "guardian"

    election_id: Mapped[int] = mapped_column(ForeignKey("election.id", ondelete="CASCADE"), primary_key=True)
    guardian_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    sequence_order: Mapped[int] = mapped_column(Integer)
    public_record: Mapped[dict[str, Any]] = mapped_column(Json)  # reference GuardianRecord JSON

    __table_args__ = (UniqueConstraint("election_id", "sequence_order"),)


class CustodialClaim(Base):
    """A custodial ceremony's private guardian record in the service's custody (migration 0011;
    ``service.elections.custody`` owns every write): ``sealed`` under the server secret, bound to the
    election and guardian, until the guardian claims it with its own token and passphrase. The claim
    erases ``sealed`` and records ``claimed_at`` (and the token's subject) in one transaction, so the row
    says when, and the service no longer holds the record."""

    __tablename__ = "custodial_claim"

    election_id: Mapped[int] = mapped_column(BigId, primary_key=True)
    guardian_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    claimed_by: Mapped[str | None] = mapped_column(String(128))

    __table_args__ = (
        ForeignKeyConstraint(
            ["election_id", "guardian_id"],
            ["guardian.election_id", "guardian.guardian_id"],
            ondelete="CASCADE",
            name="fk_custodial_claim_guardian",
        ),
        CheckConstraint(
            "(sealed IS NULL) = (claimed_at IS NOT NULL)", name="custodial_claim_held_or_claimed"
        ),
    )


class CeremonyState(enum.StrEnum):
    """A remote key ceremony's round (``key_ceremony.state``)."""

    KEYS = "keys"  # waiting for every guardian's public key
    BACKUPS = "backups"  # every key in: waiting for backups and their verifications
    CONFIRM = "confirm"  # every backup verified: the context is published, waiting for confirmations
    COMPLETE = "complete"  # every guardian confirmed: guardian rows and election.context written
    FAILED = "failed"  # a backup failed its receiver's verification (``failure`` names both)


class KeyCeremony(Base):
    """A remote (guardian-held) key ceremony of one election: public data only (migration 0009)."""

    __tablename__ = "key_ceremony"

    election_id: Mapped[int] = mapped_column(ForeignKey("election.id", ondelete="CASCADE"), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), default=CeremonyState.KEYS.value)
    failure: Mapped[str | None] = mapped_column(Text)
    # The context the keys make, published once every backup is verified (reference context JSON); copied
    # to election.context when every guardian has confirmed it.
    context: Mapped[dict[str, Any] | None] = mapped_column(Json)
    created_by: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    context_published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint(
            "state IN ('keys','backups','confirm','complete','failed')", name="key_ceremony_state_valid"
        ),
    )


class CeremonyGuardian(Base):
    """A guardian's slot in a remote ceremony and its steps: its public key (``ElectionPublicKey`` JSON),
    its confirmation proof (``compute.ceremony.Confirmation`` JSON), and when each step was done."""

    __tablename__ = "ceremony_guardian"

    election_id: Mapped[int] = mapped_column(
        ForeignKey("key_ceremony.election_id", ondelete="CASCADE"), primary_key=True
    )
    guardian_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    sequence_order: Mapped[int] = mapped_column(Integer)
    public_key: Mapped[dict[str, Any] | None] = mapped_column(Json)
    confirmation: Mapped[dict[str, Any] | None] = mapped_column(Json)
    key_posted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    backups_posted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    verifications_posted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    confirmed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (UniqueConstraint("election_id", "sequence_order", name="uq_ceremony_guardian_order"),)


class CeremonyBackup(Base):
    """A partial key backup from one guardian to another: a hashed ElGamal ciphertext to the receiver's
    key (``ElectionPartialKeyBackup`` JSON), never the coordinate; and the receiver's verification."""

    __tablename__ = "ceremony_backup"

    election_id: Mapped[int] = mapped_column(
        ForeignKey("key_ceremony.election_id", ondelete="CASCADE"), primary_key=True
    )
    sender_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    receiver_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    backup: Mapped[dict[str, Any]] = mapped_column(Json)
    posted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    verified: Mapped[bool | None] = mapped_column(Boolean)
    verified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Ballot(Base):
    """A submitted ballot in compact binary form (compute.ballot codec); ``seq`` orders chunk ranges."""

    __tablename__ = "ballot"

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    election_id: Mapped[int] = mapped_column(ForeignKey("election.id", ondelete="CASCADE"))
    object_id: Mapped[str] = mapped_column(String(256))
    state: Mapped[int] = mapped_column(Integer)  # BallotState
    code: Mapped[str] = mapped_column(String(80))
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())

    __table_args__ = (
        UniqueConstraint("election_id", "object_id"),
        Index("ix_ballot_election_seq", "election_id", "seq"),
        # A tracking code is a voter's receipt: it names one ballot (migration 0008).
        Index("ux_ballot_election_code", "election_id", "code", unique=True),
        CheckConstraint("state IN (1, 2)", name="ballot_state_valid"),
    )


class BallotCiphertext(Base):
    """A fingerprint of one selection ciphertext of a stored ballot (compute.fingerprints).

    Unique per election, so a ballot repeating a ciphertext already stored (a clone under a new id) is
    refused even when two requests carrying it commit at once.
    """

    __tablename__ = "ballot_ciphertext"

    election_id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=False)
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    ballot_seq: Mapped[int] = mapped_column(ForeignKey("ballot.seq", ondelete="CASCADE"))

    # Deleting a ballot (or an election) finds its fingerprints through this index.
    __table_args__ = (Index("ix_ballot_ciphertext_ballot_seq", "ballot_seq"),)


class ElectionCenter(Base):
    """One unit of work of an election (``kind``, numbered 1.. within its kind; the election row is 0).

    - ``chunk``: the ballots with seq in [first_seq, last_seq]; its encrypted sub-tally.
    - ``election``: the aggregate encrypted tally; ``result`` is the election's decryption.
    - ``slice``: ``encrypted_tally`` holds some selections of the aggregate; ``result`` their decryption.
    - ``spoiled``: the spoiled ballots with seq in [first_seq, last_seq] (``ballot_count`` of them);
      ``result`` holds their decryptions (``{"spoiled_ballots": {id: PlaintextTally JSON}}``).
    """

    __tablename__ = "election_center"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    election_id: Mapped[int] = mapped_column(ForeignKey("election.id", ondelete="CASCADE"))
    tally_job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("election_job.job_id"))
    chunk_number: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16), default=ChunkKind.CHUNK.value)
    first_seq: Mapped[int | None] = mapped_column(BigInteger)
    last_seq: Mapped[int | None] = mapped_column(BigInteger)
    ballot_count: Mapped[int] = mapped_column(Integer, default=0)
    cast_count: Mapped[int | None] = mapped_column(Integer)
    spoiled_ids: Mapped[list[str] | None] = mapped_column(Json)
    encrypted_tally: Mapped[dict[str, Any] | None] = mapped_column(Json)  # reference CiphertextTally JSON
    result: Mapped[dict[str, Any] | None] = mapped_column(Json)  # reference PlaintextTally JSON

    __table_args__ = (
        UniqueConstraint("election_id", "kind", "chunk_number", name="uq_election_center_kind_number"),
        CheckConstraint("kind IN ('chunk','election','slice','spoiled')", name="election_center_kind_valid"),
        # A sub-tally is never decrypted: only the aggregate, its slices and spoiled ballots have results.
        CheckConstraint("kind <> 'chunk' OR result IS NULL", name="chunk_never_decrypted"),
    )


class ElectionJob(Base):
    __tablename__ = "election_job"

    job_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    election_id: Mapped[int] = mapped_column(ForeignKey("election.id", ondelete="CASCADE"), index=True)
    operation_type: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED.value)
    total_chunks: Mapped[int] = mapped_column(Integer, default=0)
    processed_chunks: Mapped[int] = mapped_column(Integer, default=0)
    failed_chunks: Mapped[int] = mapped_column(Integer, default=0)
    parent_job_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("election_job.job_id"))
    guardian_id: Mapped[str | None] = mapped_column(String(128))
    missing_guardian_id: Mapped[str | None] = mapped_column(String(128))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=_now(), onupdate=_now()
    )
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", Json)
    # Fair share (migration 0005): a job of priority p gets p + 1 turns per round and p + 1 windows of
    # chunks in flight (service.jobs.outbox.take_due).
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The last time a chunk of the job ended (DONE or FAILED), or a re-drive; NULL: none since creation.
    # A live job with none for stuck_after_seconds is stuck (service.jobs.status).
    last_progress_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # What the reconciler last found and did about the job while it was stuck.
    reconciler_note: Mapped[str | None] = mapped_column(Text)
    reconciler_noted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Where to POST the job's status when it ends (checked against the allow-list at creation).
    callback_url: Mapped[str | None] = mapped_column(String(2048))

    __table_args__ = (
        CheckConstraint("status IN ('QUEUED','IN_PROGRESS','COMPLETED','FAILED')", name="job_status_valid"),
        CheckConstraint("priority >= 0 AND priority <= 9", name="job_priority_range"),
        CheckConstraint("processed_chunks + failed_chunks <= total_chunks", name="job_progress_bounded"),
    )


class ChunkTask(Base):
    """One unit of work: a job applied to one chunk. Attempts are counted here, not in the broker."""

    __tablename__ = "chunk_task"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("election_job.job_id", ondelete="CASCADE"))
    chunk_id: Mapped[int] = mapped_column(ForeignKey("election_center.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(16), default=TaskState.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    not_before: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # retry backoff
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=_now(), onupdate=_now()
    )

    __table_args__ = (
        UniqueConstraint("job_id", "chunk_id"),
        Index("ix_chunk_task_state", "state", "lease_expires_at"),
        CheckConstraint("state IN ('PENDING','RUNNING','DONE','FAILED')", name="task_state_valid"),
    )


class DecryptionShare(Base):
    """A guardian's partial decryption of one ``slice`` (the reference's DecryptionShare JSON of those
    selections) or one ``spoiled`` row (``{"spoiled_ballots": {id: share JSON}}``), with proofs."""

    __tablename__ = "decryption_share"

    chunk_id: Mapped[int] = mapped_column(
        ForeignKey("election_center.id", ondelete="CASCADE"), primary_key=True
    )
    guardian_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("election_job.job_id"))
    share: Mapped[dict[str, Any]] = mapped_column(Json)  # reference DecryptionShare JSON (+ spoiled ballots)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())


class CompensatedShare(Base):
    """An available guardian's share for a missing guardian of one slice or spoiled row, with proofs."""

    __tablename__ = "compensated_share"

    chunk_id: Mapped[int] = mapped_column(
        ForeignKey("election_center.id", ondelete="CASCADE"), primary_key=True
    )
    guardian_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    missing_guardian_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("election_job.job_id"))
    share: Mapped[dict[str, Any]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())


class ShareUpload(Base):
    """A share a guardian computed on its own machine and uploaded, staged until its task checks it
    (migration 0010; ``service.elections.uploads`` owns every write). One row per (unit, guardian,
    missing guardian): ``missing_guardian_id`` is ``""`` for the guardian's own share (the reference's
    DecryptionShare document of the unit), else the id of the missing guardian the compensated share is
    for. The task that checks it copies it into ``decryption_share`` or ``compensated_share`` and erases
    it in the transaction that marks it DONE; a FAILED check keeps it until the guardian uploads again."""

    __tablename__ = "share_upload"

    chunk_id: Mapped[int] = mapped_column(
        ForeignKey("election_center.id", ondelete="CASCADE"), primary_key=True
    )
    guardian_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    missing_guardian_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    election_id: Mapped[int] = mapped_column(ForeignKey("election.id", ondelete="CASCADE"), index=True)
    share: Mapped[dict[str, Any]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())


class GuardianKeyEscrow(Base):
    """What one running decryption job needs of a guardian's key, sealed under the server secret.

    A partial-decryption job's escrow holds the guardian's election secret key only; a compensated job's
    the one opened backup coordinate for its missing guardian only (``compute.guardian.DecryptionKey``,
    ``CompensationKey``). Erased when the job completes; kept for a re-drive while the job is FAILED, then
    erased after the retention (``escrow_retention_hours``).
    """

    __tablename__ = "guardian_key_escrow"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    job_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("election_job.job_id", ondelete="CASCADE"), unique=True
    )
    election_id: Mapped[int] = mapped_column(ForeignKey("election.id", ondelete="CASCADE"), index=True)
    guardian_id: Mapped[str] = mapped_column(String(128))
    missing_guardian_id: Mapped[str | None] = mapped_column(String(128))
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())


class Outbox(Base):
    """Messages to publish, written in the same transaction as the rows they announce (the transactional
    outbox; ``service.jobs.outbox`` owns every write to it).

    A message carries ids only (which operation, which job, which chunk task): never ballots, keys or
    credentials. How it travels (a RabbitMQ routing key and JSON body, or nothing at all in the embedded
    mode) is the broker's business, not this table's.
    """

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    operation: Mapped[str] = mapped_column(String(32))
    job_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    task_id: Mapped[int] = mapped_column(BigInteger, index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    available_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # A relay's reservation (migration 0012): taken for a publish that runs outside any transaction, the
    # row is not due again until ``reserved_until`` passes, which only matters if that relay died before
    # marking it sent. ``reserved_by`` names the relay's round, so it releases only its own reservations.
    reserved_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reserved_by: Mapped[str | None] = mapped_column(String(32))

    __table_args__ = (Index("ix_outbox_unsent", "sent_at", "available_at"),)


class VerifyReport(Base):
    """What one task of a VERIFY job found in its unit (a tally chunk's ballots, or the election row: the
    header checks and the tally's shares): ``compute.verify.ChunkReport`` serialized. Public data only:
    counts, problems, the cast ballots' products, fingerprint prefixes. Written in the transaction that
    marks the task DONE and read by the job's finalizer (``service.jobs.verification`` owns both)."""

    __tablename__ = "verify_report"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("election_job.job_id", ondelete="CASCADE"))
    chunk_id: Mapped[int] = mapped_column(ForeignKey("election_center.id", ondelete="CASCADE"))
    ballots: Mapped[int] = mapped_column(Integer, default=0)
    cast_count: Mapped[int] = mapped_column(Integer, default=0)
    spoiled_count: Mapped[int] = mapped_column(Integer, default=0)
    problems: Mapped[list[str]] = mapped_column(Json)
    # [[contest, selection, pad hex, data hex], ...]: the product of the unit's cast ballots
    products: Mapped[list[list[str]]] = mapped_column(Json)
    prefixes: Mapped[bytes] = mapped_column(LargeBinary)  # 8 bytes of every selection fingerprint
    available_sets: Mapped[list[list[str]]] = mapped_column(Json)  # guardian ids of each set, sorted
    failed_ballots: Mapped[list[str]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())

    __table_args__ = (UniqueConstraint("job_id", "chunk_id", name="uq_verify_report_job_chunk"),)


class CallbackState(enum.StrEnum):
    PENDING = "PENDING"  # to deliver at next_attempt_at
    DELIVERED = "DELIVERED"  # the receiver answered 2xx
    FAILED = "FAILED"  # attempts exhausted


class JobCallback(Base):
    """One notification of a job's end (COMPLETED or FAILED) to its ``callback_url``: written in the
    transaction that ends the job, so exactly one per end; delivered, signed, with retries and backoff,
    by the reconciler's thread (``service.jobs.callbacks`` owns every write)."""

    __tablename__ = "job_callback"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("election_job.job_id", ondelete="CASCADE"), index=True
    )
    job_status: Mapped[str] = mapped_column(String(16))
    url: Mapped[str] = mapped_column(String(2048))
    payload: Mapped[str] = mapped_column(Text)  # the exact bytes signed and sent (UTF-8 JSON)
    state: Mapped[str] = mapped_column(String(16), default=CallbackState.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_job_callback_due", "state", "next_attempt_at"),
        CheckConstraint("state IN ('PENDING','DELIVERED','FAILED')", name="job_callback_state_valid"),
    )
