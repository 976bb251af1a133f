"""Request bodies. Field names keep the seed's (snake_case in, camelCase job documents out)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateElection(_Body):
    name: str = Field(min_length=1, max_length=256)
    number_of_guardians: int = Field(ge=1, le=100)
    quorum: int = Field(ge=1, le=100)
    manifest: dict[str, Any] | None = Field(default=None, description="The reference's manifest JSON")
    candidate_names: list[str] | None = Field(default=None, description="One contest of these candidates")
    party_names: list[str] | None = Field(default=None, description="Candidate i's party (optional)")
    max_choices: int = Field(default=1, ge=1)


class ReplaceManifest(_Body):
    manifest: dict[str, Any]


class GuardianPassphrase(_Body):
    guardian_id: str = Field(min_length=1, max_length=128)
    passphrase: SecretStr = Field(description="Chosen by the guardian; seals its credential file")


class KeyCeremony(_Body):
    guardians: list[GuardianPassphrase]


class SubmitBallot(_Body):
    ballot: dict[str, Any] = Field(description="The reference's (Ciphertext or Submitted) ballot JSON")
    action: Literal["cast", "spoil"] = "cast"


class BulkBallots(_Body):
    ballots: list[SubmitBallot]


class EncryptBallot(_Body):
    ballot: dict[str, Any] = Field(description="The reference's PlaintextBallot JSON")
    action: Literal["cast", "spoil", "pending"] = Field(
        default="cast",
        description="cast: store it as cast (no nonce returned); spoil: store it as spoiled and return its"
        " nonce and plaintext (a challenge at once); pending: store nothing and hold it in this API process"
        " for POST .../ballots/{ballot_id}/cast or .../challenge",
    )


class _JobBody(_Body):
    """What every job-creating request may add: fair-share priority and a completion callback."""

    priority: int = Field(
        default=0,
        ge=0,
        le=9,
        description="Higher first: a job of priority p gets p + 1 turns per round of the fair queue and"
        " p + 1 windows of chunks in flight; priority 0 jobs still progress",
    )
    callback_url: str | None = Field(
        default=None,
        max_length=2048,
        description="POSTed the job's status JSON when it ends (COMPLETED or FAILED), signed"
        " (X-Amarvote-Signature: sha256=HMAC-SHA256(callback secret, X-Amarvote-Timestamp + '.' + body));"
        " must fall under the server's AMARVOTE_CALLBACK_ALLOWED_URLS (422 otherwise)",
    )


class CreateTally(_JobBody):
    election_id: int
    chunk_size: int | None = Field(default=None, ge=1, le=1_000_000)


class CreateDecryption(_JobBody):
    election_id: int
    guardian_id: str = Field(min_length=1, max_length=128)
    credentials: dict[str, Any] | str = Field(description="The credential file from the key ceremony")
    passphrase: SecretStr
    missing_guardian_ids: list[str] = Field(default_factory=list)


class CreateCombine(_JobBody):
    election_id: int


class ErrorDetail(BaseModel):
    """What every refusal carries: a DomainError's reason, or where and what for a malformed body."""

    detail: str | list[dict[str, Any]]


def errors(*codes: tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for a route's refusals: (status, when)."""
    return {code: {"model": ErrorDetail, "description": when} for code, when in codes}
