"""Configuration from the environment (prefix ``AMARVOTE_``) or a ``.env`` file.

With no database URL, AMQP URL or Ray address set, everything runs embedded: SQLite in the data
directory, the outbox drained in-process instead of RabbitMQ, and a local Ray instance.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.security.sealing import MAX_KDF_MEMORY_KIB, MAX_KDF_PARALLELISM, MAX_KDF_TIME_COST


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AMARVOTE_", env_file=".env", extra="ignore")

    data_dir: Path = Path("amarvote-data")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; SQLite in data_dir if unset")
    amqp_url: str | None = Field(default=None, description="RabbitMQ URL; the in-process outbox if unset")
    ray_address: str | None = Field(default=None, description="Ray cluster address; a local Ray if unset")
    ray_dashboard: bool = Field(
        default=True,
        description=(
            "The local Ray's dashboard on 127.0.0.1 (without an address; off: about 3 s less CPU a start)"
        ),
    )
    server_secret: SecretStr | None = Field(
        default=None,
        description="Seals key material of running jobs (API, bridges, Ray nodes; 32+ bytes);"
        " generated into data_dir if unset",
    )

    # 2,500 (benchmarks/README.md, "Choosing the chunk size"): from 1,000 up the tally's time is level and
    # the time outside the tasks 1 to 2%; a task's memory is flat in the chunk size; an election needs a few
    # chunks per core to keep a cluster busy to the end (100,000 ballots: 40 chunks), and a retry redoes a
    # whole chunk (about 23 s of a core at 2,500).
    chunk_size: int = Field(default=2500, ge=1, le=1_000_000)
    # Decryption never touches a tally chunk: only the aggregate, in slices of its selections, and the
    # spoiled ballots, in runs, each one task (service.jobs.planning.ensure_decryption_units).
    decryption_slice_selections: int = Field(
        default=100, ge=1, le=100_000, description="Selections of the aggregate per decryption task"
    )
    spoiled_chunk_size: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="Spoiled ballots per decryption task (default: as many as hold about"
        " decryption_slice_selections selections)",
    )
    escrow_retention_hours: float = Field(
        default=24.0,
        ge=0,
        description="How long a FAILED decryption job keeps its key escrow for a re-drive",
    )
    max_attempts: int = Field(default=3, ge=1, description="Attempts per chunk task before it is FAILED")
    retry_backoff_seconds: float = Field(default=2.0, ge=0)
    lease_seconds: int = Field(
        default=600, ge=5, description="A RUNNING chunk task with an older lease is free"
    )
    # Measured: a chunk task's whole Ray worker peaks at 201 to 286 MiB RSS (benchmarks/README.md; the
    # chunk's own share about 54 MiB above the worker's baseline); ballots are streamed in batches of at
    # most 4 MiB, so the peak does not grow with the chunk or election. Ray uses this for admission only.
    task_memory_mb: int = Field(default=384, ge=64, description="Ray memory= per chunk task (admission)")
    max_in_flight: int = Field(default=4, ge=1, description="Chunk tasks a bridge keeps in flight")
    # A chunk of the default size takes seconds to a minute (benchmarks/README.md); one that runs for an
    # hour is hung (a call that never returns), and its renewed lease would hold its job for ever.
    chunk_time_limit_seconds: float = Field(
        default=3600.0,
        ge=0,
        description="A chunk task still running this long after it was submitted is killed and counts a"
        " failed attempt (0: no limit)",
    )
    # `record verify` on Ray: the ballot files its driver has sent and not yet had checked (about 16 MB a
    # chunk of 200 three-contest ballots). It bounds the driver's memory; on a large cluster raise it to
    # about 16 MB per CPU to keep every CPU busy (bridge/verify.py).
    verify_in_flight_mb: int = Field(
        default=96, ge=8, description="MiB of ballot files `record verify` keeps in flight on Ray"
    )
    # Fair share (service.jobs.outbox.take_due): at most this many of one job's chunks queued or running
    # at once, the rest waiting in the outbox. Unset: 2 x max_in_flight, one bridge's capacity plus one
    # refill of headroom (the relay cannot see the Ray cluster; with N bridges set 2 x N x max_in_flight).
    # 0: no window (every due message published at once, the old behaviour).
    job_window: int | None = Field(
        default=None, ge=0, description="Chunks of one job queued or running at once (0: no limit)"
    )
    stuck_after_seconds: float = Field(
        default=600.0, gt=0, description="A live job with no chunk ending for this long is stuck"
    )
    # Completion callbacks (service.jobs.callbacks): POSTed by the reconciler's thread, never by a worker.
    callback_secret: SecretStr | None = Field(
        default=None, description="HMAC-SHA256 key of the completion callbacks (32+ bytes)"
    )
    callback_allowed_urls: str = Field(
        default="",
        description="Comma-separated URL prefixes a job's callback_url must start with (empty: no callbacks)",
    )
    callback_max_attempts: int = Field(default=8, ge=1)
    callback_backoff_seconds: float = Field(default=5.0, ge=0)
    callback_timeout_seconds: float = Field(default=5.0, gt=0)

    jwt_secret: SecretStr | None = Field(
        default=None,
        description="Signs API tokens (API replicas only; 32+ bytes); required with a database URL,"
        " generated into data_dir on the embedded default",
    )
    jwt_algorithm: str = "HS256"
    job_rate_limit_per_minute: int = 60

    # Ballots encrypted with action "pending" wait in the API process's memory (never at rest) for the
    # voter to cast or challenge them; each holds one encrypted ballot (about 4 KiB per selection).
    pending_ballot_seconds: int = Field(
        default=900, ge=1, le=86_400, description="How long an encrypted ballot waits for cast/challenge"
    )
    max_pending_ballots: int = Field(
        default=10_000, ge=1, description="Pending ballots one API process holds at most"
    )

    # argon2id cost for guardian credential files (RFC 9106's second recommended option by default),
    # within the bounds every credential file is held to (service.security.sealing).
    kdf_time_cost: int = Field(default=3, ge=1, le=MAX_KDF_TIME_COST)
    kdf_memory_kib: int = Field(default=65536, ge=8, le=MAX_KDF_MEMORY_KIB)
    kdf_parallelism: int = Field(default=2, ge=1, le=MAX_KDF_PARALLELISM)
    kdf_concurrency: int = Field(
        default=2, ge=1, description="Credential files opened (argon2 runs) at once per API process"
    )
    kdf_wait_seconds: float = Field(
        default=2.0, ge=0, description="How long a request waits for a KDF slot before a 503"
    )
    # Bodies are refused above these before anything reads them (service.api.body_limit). An encrypted
    # ballot of a 3-candidate contest is about 35 KB of JSON, so a bulk upload of MAX_BULK (5,000,
    # service.elections.ballots) is about 170 MB: only that route gets the large limit.
    max_body_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        description="Request bodies above this are refused with 413 before authentication reads them",
    )
    max_bulk_body_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1024,
        description="The same limit for POST /api/elections/{id}/ballots/bulk",
    )
    # The web pages (service/api/routes_board.py, routes_console.py).
    board_lookups_per_minute: int = Field(
        default=30, ge=0, description="Tracking-code lookups per client address a minute (0: no limit)"
    )
    board_record_downloads_per_minute: int = Field(
        default=6, ge=0, description="Public record downloads per client address a minute (0: no limit)"
    )
    console_session_minutes: int = Field(
        default=30, ge=1, le=24 * 60, description="How long an operator console session lasts"
    )
    ray_dashboard_url: str | None = Field(default=None, description="Linked from the operator console")
    grafana_url: str | None = Field(default=None, description="Linked from the operator console")
    log_level: str = Field(
        default="INFO",
        description="Level of amarvote's own log lines; libraries (pika, Ray, uvicorn's access log) log at"
        " WARNING unless this is DEBUG (or --debug is given)",
    )

    # Run the migrations when the API starts: on by default for the embedded SQLite database only.
    auto_migrate: bool | None = None

    @field_validator("kdf_parallelism")
    @classmethod
    def _lanes_fit_memory(cls, value: int, info: ValidationInfo) -> int:
        # argon2 needs 8 KiB per lane (KdfParams.check refuses less in a credential file). A field
        # validator, not a model one: pydantic quotes a model validator's whole input, secrets included.
        memory = info.data.get("kdf_memory_kib")
        if memory is not None and memory < 8 * value:
            raise ValueError(f"kdf_memory_kib ({memory}) must be at least 8 x kdf_parallelism")
        return value

    @field_validator("callback_secret")
    @classmethod
    def _callback_secret_long(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < 32:
            raise ValueError("callback_secret must be at least 32 bytes")
        return value

    @property
    def window(self) -> int | None:
        """The fair-share window in chunks per job, None for none."""
        if self.job_window == 0:
            return None
        return self.job_window or 2 * self.max_in_flight

    @property
    def callback_prefixes(self) -> list[str]:
        return [u.strip() for u in self.callback_allowed_urls.split(",") if u.strip()]

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'amarvote.sqlite3').resolve()}"

    @property
    def embedded(self) -> bool:
        return self.amqp_url is None


@lru_cache
def get_settings() -> Settings:
    return Settings()
