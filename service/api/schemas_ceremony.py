"""Bodies and answers of the guardian-held key ceremony (``routes_ceremony.py``): the reference's JSON
for keys, backups and verifications (``compute/guardian.py``), bounded here so that malformed input is a
422 naming the field before anything parses it."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints

from service.api.types import GuardianId

# An element of Z_p is 512 bytes: 1024 hex digits (the parsers check the range).
Hex = Annotated[str, StringConstraints(min_length=1, max_length=1024, pattern=r"^[0-9A-Fa-f]+$")]
# A backup's hashed ElGamal data (512 bytes padded) and MAC (32 bytes), as hex.
HexData = Annotated[str, StringConstraints(min_length=1, max_length=1024, pattern=r"^[0-9A-Fa-f]+$")]
Usage = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00]*$")]
Order = Annotated[int, Field(ge=1, le=100)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="python", exclude_none=True)


class StartCeremony(_Body):
    guardian_ids: list[GuardianId] = Field(
        min_length=1,
        max_length=100,
        description="One per guardian of the election; sequence orders 1..n in this order",
    )


class SchnorrProofJson(_Body):
    public_key: Hex
    commitment: Hex
    challenge: Hex
    response: Hex
    usage: Usage | None = None


class ElectionPublicKeyJson(_Body):
    """The reference's ``ElectionPublicKey``: ``make_guardian_keys(...).share().to_json()``
    (``compute.ceremony``)."""

    owner_id: GuardianId
    sequence_order: Order
    key: Hex
    coefficient_commitments: list[Hex] = Field(min_length=1, max_length=100)
    coefficient_proofs: list[SchnorrProofJson] = Field(min_length=1, max_length=100)


class HashedCiphertextJson(_Body):
    pad: Hex
    data: HexData
    mac: Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[0-9A-Fa-f]+$")]


class BackupJson(_Body):
    """The reference's ``ElectionPartialKeyBackup``: ``compute.ceremony.backups_for``."""

    owner_id: GuardianId
    designated_id: GuardianId
    designated_sequence_order: Order
    encrypted_coordinate: HashedCiphertextJson


class PostBackups(_Body):
    backups: list[BackupJson] = Field(min_length=1, max_length=99, description="One per other guardian")


class VerificationJson(_Body):
    """The reference's ``ElectionPartialKeyVerification``: ``compute.ceremony.verify_received_backups``."""

    owner_id: GuardianId = Field(description="The backup's sender")
    designated_id: GuardianId = Field(description="The backup's receiver: the posting guardian")
    verifier_id: GuardianId = Field(description="The posting guardian")
    verified: StrictBool


class PostVerifications(_Body):
    verifications: list[VerificationJson] = Field(
        min_length=1, max_length=99, description="One per sender, all at once or as the backups arrive"
    )


class ConfirmationJson(_Body):
    """``compute.ceremony.make_confirmation(keys, context).to_json()``: a Schnorr proof of knowledge of the
    guardian's election secret key, its challenge bound to guardian and published context."""

    commitment: Hex
    challenge: Hex
    response: Hex


# ------------------------------------------------------------------------------------------------ answers


class IssuedGuardian(BaseModel):
    guardian_id: str
    sequence_order: int
    token: str = Field(description="The guardian's bearer token for this election: hand it to the guardian")


class StartedCeremony(BaseModel):
    election_id: int
    key_mode: str
    state: str
    guardians: list[IssuedGuardian]


class GuardianSteps(BaseModel):
    guardian_id: str
    sequence_order: int
    key_posted_at: str | None
    backups_posted_at: str | None
    verifications_posted_at: str | None
    confirmed_at: str | None


class Due(BaseModel):
    actions: list[str] = Field(
        description="What this guardian has to do now: post_key, post_backups, post_verifications, confirm"
    )
    backups_to_verify: list[str] = Field(description="Senders whose backups to it await its verification")
    backups_awaited_from: list[str] = Field(description="Guardians who have not yet posted its backup")


class CeremonyStatus(BaseModel):
    election_id: int
    key_mode: str
    state: str = Field(description="keys, backups, confirm, complete or failed")
    failure: str | None = Field(description="Which sender's backup failed which receiver's verification")
    number_of_guardians: int
    quorum: int
    manifest_hash: str | None
    context: dict[str, Any] | None = Field(
        description="The context the keys make (the reference's JSON), published once every backup is"
        " verified"
    )
    created_at: str | None
    context_published_at: str | None
    ended_at: str | None
    guardians: list[GuardianSteps]
    due: Due | None = Field(description="For a guardian's token: what it has to do now; null for an admin")
