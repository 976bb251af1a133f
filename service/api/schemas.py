"""Request bodies. Field names keep the seed's (snake_case in, camelCase job documents out)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

# Kept importable from here for route modules written before service.api.errors held them.
from service.api.errors import ErrorBody as ErrorBody
from service.api.errors import ErrorBody as ErrorDetail  # noqa: F401
from service.api.errors import errors as errors
from service.api.types import PASSPHRASE_MAX, BallotJson, ElectionName, GuardianId, Id, Label
from service.elections.elections import PASSPHRASES_MOVED


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateElection(_Body):
    name: ElectionName
    number_of_guardians: int = Field(ge=1, le=100)
    quorum: int = Field(ge=1, le=100)
    manifest: dict[str, Any] | None = Field(default=None, description="The reference's manifest JSON")
    candidate_names: list[Label] | None = Field(
        default=None, max_length=1000, description="One contest of these candidates"
    )
    party_names: list[Label] | None = Field(
        default=None, max_length=1000, description="Candidate i's party (optional)"
    )
    max_choices: int = Field(default=1, ge=1, le=1000)


class ReplaceManifest(_Body):
    manifest: dict[str, Any]


class KeyCeremony(_Body):
    """The custodial key ceremony's request: guardian ids only. A body carrying passphrases (the old
    ``{guardians: [{guardian_id, passphrase}]}``) is refused: a guardian's passphrase goes with its own
    claim, never through the admin."""

    guardian_ids: list[GuardianId] = Field(
        min_length=1,
        max_length=100,
        description="One per guardian of the election; sequence orders 1..n in this order",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_passphrases(cls, data: Any) -> Any:
        if isinstance(data, dict) and ("guardians" in data or _has_key(data, "passphrase")):
            raise ValueError(PASSPHRASES_MOVED)
        return data


def _has_key(data: Any, key: str, depth: int = 0) -> bool:
    if depth > 8:
        return False
    if isinstance(data, dict):
        return key in data or any(_has_key(v, key, depth + 1) for v in data.values())
    if isinstance(data, list):
        return any(_has_key(v, key, depth + 1) for v in data[:200])
    return False


class ClaimCredentials(_Body):
    passphrase: SecretStr = Field(
        min_length=1,
        max_length=PASSPHRASE_MAX,
        description="Chosen by the guardian, at least 8 characters; seals the credential file returned"
        " (and is needed with it for POST /api/decryption/create)",
    )


class SubmitBallot(_Body):
    ballot: BallotJson = Field(description="The reference's (Ciphertext or Submitted) ballot JSON")
    action: Literal["cast", "spoil"] = "cast"


class BulkBallots(_Body):
    ballots: list[SubmitBallot]


class EncryptBallot(_Body):
    ballot: BallotJson = Field(description="The reference's PlaintextBallot JSON")
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
        " must fall under the server's AMARVOTE_CALLBACK_ALLOWED_URLS once normalised (dot segments resolved;"
        " control and whitespace characters refused; 422 otherwise); the normalised URL is stored and called",
    )


class CreateTally(_JobBody):
    election_id: Id
    chunk_size: int | None = Field(default=None, ge=1, le=1_000_000)


class CreateDecryption(_JobBody):
    election_id: Id
    guardian_id: GuardianId
    credentials: dict[str, Any] | Annotated[str, Field(max_length=1_000_000)] = Field(
        description="The credential file from the key ceremony"
    )
    passphrase: SecretStr = Field(min_length=1, max_length=PASSPHRASE_MAX)
    missing_guardian_ids: list[GuardianId] = Field(default_factory=list, max_length=100)


class CreateCombine(_JobBody):
    election_id: Id


class CreateVerify(_JobBody):
    election_id: Id


class DeclareMissing(_Body):
    guardian_ids: list[GuardianId] = Field(
        max_length=100, description="The guardians that will not decrypt (at most n - quorum; may be empty)"
    )


class UploadUnitShares(_Body):
    share: dict[str, Any] = Field(
        description="The guardian's own share of the unit: the reference's DecryptionShare JSON of a slice,"
        ' or {"spoiled_ballots": {ballot id: DecryptionShare JSON}} of a spoiled run'
    )
    compensated: dict[GuardianId, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per declared missing guardian, the compensated share of the unit"
        " (CompensatedDecryptionShare JSON, same per-unit shape); exactly the declared missing guardians",
    )


class SubmitShares(_JobBody):
    pass
