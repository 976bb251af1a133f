"""Decrypted tallies as the reference lays them out (``electionguard.tally.PlaintextTally``), with its JSON:
each selection's count t, g^t, the ciphertext and the guardians' shares that decrypted it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gmpy2 import mpz

from compute.decryption_share import CiphertextDecryptionSelection
from compute.elgamal import Ciphertext
from compute.group import from_hex, to_hex


@dataclass(slots=True)
class PlaintextTallySelection:
    object_id: str
    tally: int
    value: mpz  # g^tally
    message: Ciphertext
    shares: list[CiphertextDecryptionSelection]

    def to_json(self) -> dict[str, Any]:
        return {
            "object_id": self.object_id,
            "tally": self.tally,
            "value": to_hex(self.value),
            "message": self.message.to_json(),
            "shares": [s.to_json() for s in self.shares],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PlaintextTallySelection:
        return cls(
            d["object_id"],
            int(d["tally"]),
            from_hex(d["value"]),
            Ciphertext.from_json(d["message"]),
            [CiphertextDecryptionSelection.from_json(s) for s in d["shares"]],
        )


@dataclass(slots=True)
class PlaintextTallyContest:
    object_id: str
    selections: dict[str, PlaintextTallySelection]

    def to_json(self) -> dict[str, Any]:
        return {
            "object_id": self.object_id,
            "selections": {k: s.to_json() for k, s in self.selections.items()},
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PlaintextTallyContest:
        return cls(
            d["object_id"], {k: PlaintextTallySelection.from_json(s) for k, s in d["selections"].items()}
        )


@dataclass(slots=True)
class PlaintextTally:
    """tally.json, and each spoiled_ballot_<id>.json (the reference writes spoiled ballots this way)."""

    object_id: str
    contests: dict[str, PlaintextTallyContest]

    def to_json(self) -> dict[str, Any]:
        return {"object_id": self.object_id, "contests": {k: c.to_json() for k, c in self.contests.items()}}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PlaintextTally:
        return cls(d["object_id"], {k: PlaintextTallyContest.from_json(c) for k, c in d["contests"].items()})

    def counts(self) -> dict[str, dict[str, int]]:
        return {cid: {sid: s.tally for sid, s in c.selections.items()} for cid, c in self.contests.items()}
