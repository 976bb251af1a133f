"""The election context (the reference's ``CiphertextElectionContext``) and its JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gmpy2 import mpz

from compute.constants import G, P, Q
from compute.group import from_hex, to_hex
from compute.hashing import hash_elems


@dataclass(frozen=True, slots=True)
class Configuration:
    allow_overvotes: bool = True
    max_votes: int = 1_000_000


@dataclass(frozen=True, slots=True)
class ElectionContext:
    number_of_guardians: int
    quorum: int
    elgamal_public_key: mpz
    commitment_hash: mpz
    manifest_hash: mpz
    crypto_base_hash: mpz
    crypto_extended_base_hash: mpz
    extended_data: dict[str, str] | None = None
    configuration: Configuration = field(default_factory=Configuration)

    def to_json(self) -> dict[str, Any]:
        return {
            "number_of_guardians": self.number_of_guardians,
            "quorum": self.quorum,
            "elgamal_public_key": to_hex(self.elgamal_public_key),
            "commitment_hash": to_hex(self.commitment_hash),
            "manifest_hash": to_hex(self.manifest_hash),
            "crypto_base_hash": to_hex(self.crypto_base_hash),
            "crypto_extended_base_hash": to_hex(self.crypto_extended_base_hash),
            "extended_data": self.extended_data,
            "configuration": {
                "allow_overvotes": self.configuration.allow_overvotes,
                "max_votes": self.configuration.max_votes,
            },
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ElectionContext:
        conf = d.get("configuration") or {}
        return cls(
            number_of_guardians=int(d["number_of_guardians"]),
            quorum=int(d["quorum"]),
            elgamal_public_key=from_hex(d["elgamal_public_key"]),
            commitment_hash=from_hex(d["commitment_hash"]),
            manifest_hash=from_hex(d["manifest_hash"]),
            crypto_base_hash=from_hex(d["crypto_base_hash"]),
            crypto_extended_base_hash=from_hex(d["crypto_extended_base_hash"]),
            extended_data=d.get("extended_data"),
            configuration=Configuration(
                allow_overvotes=bool(conf.get("allow_overvotes", True)),
                max_votes=int(conf.get("max_votes", 1_000_000)),
            ),
        )


def make_context(
    number_of_guardians: int,
    quorum: int,
    elgamal_public_key: mpz,
    commitment_hash: mpz,
    manifest_hash: mpz,
    extended_data: dict[str, str] | None = None,
) -> ElectionContext:
    """As ``electionguard.election.make_ciphertext_election_context``."""
    base = hash_elems(P, Q, G, number_of_guardians, quorum, manifest_hash)
    return ElectionContext(
        number_of_guardians=number_of_guardians,
        quorum=quorum,
        elgamal_public_key=elgamal_public_key,
        commitment_hash=commitment_hash,
        manifest_hash=manifest_hash,
        crypto_base_hash=base,
        crypto_extended_base_hash=hash_elems(base, commitment_hash),
        extended_data=extended_data,
    )
