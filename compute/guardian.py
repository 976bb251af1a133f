"""Guardian key material and records, with the reference's JSON (``electionguard.key_ceremony`` and
``electionguard.guardian``): ``GuardianRecord`` is published, ``PrivateGuardianRecord`` is secret."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gmpy2 import mpz

from compute.elgamal import KeyPair
from compute.group import from_hex, to_hex
from compute.hashed_elgamal import HashedElGamalCiphertext, backup_seed, decode_coordinate
from compute.polynomial import ElectionPolynomial
from compute.schnorr import SchnorrProof


@dataclass(slots=True)
class ElectionPublicKey:
    owner_id: str
    sequence_order: int
    key: mpz
    coefficient_commitments: list[mpz]
    coefficient_proofs: list[SchnorrProof]

    def to_json(self) -> dict[str, Any]:
        return {
            "owner_id": self.owner_id,
            "sequence_order": self.sequence_order,
            "key": to_hex(self.key),
            "coefficient_commitments": [to_hex(c) for c in self.coefficient_commitments],
            "coefficient_proofs": [p.to_json() for p in self.coefficient_proofs],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ElectionPublicKey:
        return cls(
            d["owner_id"],
            int(d["sequence_order"]),
            from_hex(d["key"]),
            [from_hex(c) for c in d["coefficient_commitments"]],
            [SchnorrProof.from_json(p) for p in d["coefficient_proofs"]],
        )


@dataclass(slots=True)
class ElectionKeyPair:
    owner_id: str
    sequence_order: int
    key_pair: KeyPair
    polynomial: ElectionPolynomial

    def share(self) -> ElectionPublicKey:
        return ElectionPublicKey(
            self.owner_id,
            self.sequence_order,
            self.key_pair.public_key,
            self.polynomial.get_commitments(),
            self.polynomial.get_proofs(),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "owner_id": self.owner_id,
            "sequence_order": self.sequence_order,
            "key_pair": {
                "secret_key": to_hex(self.key_pair.secret_key),
                "public_key": to_hex(self.key_pair.public_key),
            },
            "polynomial": self.polynomial.to_json(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ElectionKeyPair:
        kp = d["key_pair"]
        return cls(
            d["owner_id"],
            int(d["sequence_order"]),
            KeyPair(from_hex(kp["secret_key"]), from_hex(kp["public_key"])),
            ElectionPolynomial.from_json(d["polynomial"]),
        )


@dataclass(frozen=True, slots=True)
class DecryptionKey:
    """All a present guardian's partial decryption needs: its election secret key (no polynomial, no
    backups). What a partial-decryption job keeps in escrow."""

    guardian_id: str
    sequence_order: int
    secret_key: mpz
    public_key: mpz

    def to_json(self) -> dict[str, Any]:
        return {
            "guardian_id": self.guardian_id,
            "sequence_order": self.sequence_order,
            "secret_key": to_hex(self.secret_key),
            "public_key": to_hex(self.public_key),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> DecryptionKey:
        return cls(
            d["guardian_id"], int(d["sequence_order"]), from_hex(d["secret_key"]), from_hex(d["public_key"])
        )


@dataclass(frozen=True, slots=True)
class CompensationKey:
    """All a present guardian needs to decrypt on behalf of one missing guardian: the opened backup
    coordinate P_missing(present's sequence order). What a compensated-decryption job keeps in escrow."""

    guardian_id: str
    sequence_order: int
    public_key: mpz
    missing_guardian_id: str
    coordinate: mpz

    def to_json(self) -> dict[str, Any]:
        return {
            "guardian_id": self.guardian_id,
            "sequence_order": self.sequence_order,
            "public_key": to_hex(self.public_key),
            "missing_guardian_id": self.missing_guardian_id,
            "coordinate": to_hex(self.coordinate),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CompensationKey:
        return cls(
            d["guardian_id"],
            int(d["sequence_order"]),
            from_hex(d["public_key"]),
            d["missing_guardian_id"],
            from_hex(d["coordinate"]),
        )


@dataclass(slots=True)
class ElectionPartialKeyBackup:
    owner_id: str
    designated_id: str
    designated_sequence_order: int
    encrypted_coordinate: HashedElGamalCiphertext

    def to_json(self) -> dict[str, Any]:
        return {
            "owner_id": self.owner_id,
            "designated_id": self.designated_id,
            "designated_sequence_order": self.designated_sequence_order,
            "encrypted_coordinate": self.encrypted_coordinate.to_json(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ElectionPartialKeyBackup:
        return cls(
            d["owner_id"],
            d["designated_id"],
            int(d["designated_sequence_order"]),
            HashedElGamalCiphertext.from_json(d["encrypted_coordinate"]),
        )

    def decrypt(self, receiver: ElectionKeyPair) -> mpz | None:
        """The coordinate P_owner(receiver's sequence order), or None if the MAC fails."""
        seed = backup_seed(receiver.owner_id, receiver.sequence_order)
        plain = self.encrypted_coordinate.decrypt(receiver.key_pair.secret_key, seed)
        return None if plain is None else decode_coordinate(plain)


@dataclass(slots=True)
class ElectionPartialKeyVerification:
    owner_id: str
    designated_id: str
    verifier_id: str
    verified: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "owner_id": self.owner_id,
            "designated_id": self.designated_id,
            "verifier_id": self.verifier_id,
            "verified": self.verified,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ElectionPartialKeyVerification:
        return cls(d["owner_id"], d["designated_id"], d["verifier_id"], bool(d["verified"]))


@dataclass(slots=True)
class GuardianRecord:
    """The published record: public key, coefficient commitments and their Schnorr proofs."""

    guardian_id: str
    sequence_order: int
    election_public_key: mpz
    election_commitments: list[mpz]
    election_proofs: list[SchnorrProof]

    def to_json(self) -> dict[str, Any]:
        return {
            "guardian_id": self.guardian_id,
            "sequence_order": self.sequence_order,
            "election_public_key": to_hex(self.election_public_key),
            "election_commitments": [to_hex(c) for c in self.election_commitments],
            "election_proofs": [p.to_json() for p in self.election_proofs],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> GuardianRecord:
        return cls(
            d["guardian_id"],
            int(d["sequence_order"]),
            from_hex(d["election_public_key"]),
            [from_hex(c) for c in d["election_commitments"]],
            [SchnorrProof.from_json(p) for p in d["election_proofs"]],
        )

    def public_key(self) -> ElectionPublicKey:
        return ElectionPublicKey(
            self.guardian_id,
            self.sequence_order,
            self.election_public_key,
            list(self.election_commitments),
            list(self.election_proofs),
        )

    @classmethod
    def from_public_key(cls, k: ElectionPublicKey) -> GuardianRecord:
        return cls(
            k.owner_id, k.sequence_order, k.key, list(k.coefficient_commitments), list(k.coefficient_proofs)
        )


def _map_json(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v.to_json() for k, v in d.items()}


@dataclass(slots=True)
class PrivateGuardianRecord:
    """Secret: the guardian's keys and the backups it holds for the others. Never publish."""

    guardian_id: str
    election_keys: ElectionKeyPair
    backups_to_share: dict[str, ElectionPartialKeyBackup] = field(default_factory=dict)
    guardian_election_public_keys: dict[str, ElectionPublicKey] = field(default_factory=dict)
    guardian_election_partial_key_backups: dict[str, ElectionPartialKeyBackup] = field(default_factory=dict)
    guardian_election_partial_key_verifications: dict[str, ElectionPartialKeyVerification] = field(
        default_factory=dict
    )

    def to_json(self) -> dict[str, Any]:
        return {
            "guardian_id": self.guardian_id,
            "election_keys": self.election_keys.to_json(),
            "backups_to_share": _map_json(self.backups_to_share),
            "guardian_election_public_keys": _map_json(self.guardian_election_public_keys),
            "guardian_election_partial_key_backups": _map_json(self.guardian_election_partial_key_backups),
            "guardian_election_partial_key_verifications": _map_json(
                self.guardian_election_partial_key_verifications
            ),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PrivateGuardianRecord:
        return cls(
            d["guardian_id"],
            ElectionKeyPair.from_json(d["election_keys"]),
            {k: ElectionPartialKeyBackup.from_json(v) for k, v in (d.get("backups_to_share") or {}).items()},
            {
                k: ElectionPublicKey.from_json(v)
                for k, v in (d.get("guardian_election_public_keys") or {}).items()
            },
            {
                k: ElectionPartialKeyBackup.from_json(v)
                for k, v in (d.get("guardian_election_partial_key_backups") or {}).items()
            },
            {
                k: ElectionPartialKeyVerification.from_json(v)
                for k, v in (d.get("guardian_election_partial_key_verifications") or {}).items()
            },
        )

    @property
    def sequence_order(self) -> int:
        return self.election_keys.sequence_order

    def publish(self) -> GuardianRecord:
        return GuardianRecord.from_public_key(self.election_keys.share())

    def decryption_key(self) -> DecryptionKey:
        kp = self.election_keys.key_pair
        return DecryptionKey(self.guardian_id, self.sequence_order, kp.secret_key, kp.public_key)

    def compensation_key(self, missing_guardian_id: str) -> CompensationKey:
        return CompensationKey(
            self.guardian_id,
            self.sequence_order,
            self.election_keys.key_pair.public_key,
            missing_guardian_id,
            self.coordinate_from(missing_guardian_id),
        )

    def coordinate_from(self, missing_guardian_id: str) -> mpz:
        """Decrypt the backup the missing guardian sent this one: P_missing(this guardian's order)."""
        backup = self.guardian_election_partial_key_backups.get(missing_guardian_id)
        if backup is None:
            raise KeyError(f"guardian {self.guardian_id} holds no backup from guardian {missing_guardian_id}")
        coordinate = backup.decrypt(self.election_keys)
        if coordinate is None:
            raise ValueError(
                f"guardian {self.guardian_id} cannot decrypt the backup from {missing_guardian_id} (bad MAC)"
            )
        return coordinate
