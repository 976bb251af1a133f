"""Decryption shares as the reference lays them out (``electionguard.decryption_share``), with its JSON,
and DecryptionError, which every step of a decryption raises.

A present guardian's share of a selection is M_i = A^s_i with a Chaum-Pedersen proof against its key K_i.
For a missing guardian j each present guardian l gives a compensated share M_{j,l} = A^P_j(l) with a
proof against the recovery key g^P_j(l); j's reconstructed share keeps those parts as ``recovered_parts``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gmpy2 import mpz

from compute.chaum_pedersen import ChaumPedersenProof
from compute.group import from_hex, to_hex


class DecryptionError(ValueError):
    """Carries ``problems``: one line per failing share, naming the guardian and the selection."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(
            "; ".join(problems[:20]) + (f" (+{len(problems) - 20} more)" if len(problems) > 20 else "")
        )
        self.problems = problems

    def __reduce__(self) -> tuple[Any, ...]:
        # Unpickling (Ray hands a task's exception to the driver this way) calls cls(*self.args), and
        # args holds the joined message, not the list: "; ".join over a string interleaves its letters.
        return type(self), (self.problems,), self.__dict__


@dataclass(slots=True)
class CiphertextCompensatedDecryptionSelection:
    object_id: str
    guardian_id: str  # the present guardian that made it
    missing_guardian_id: str
    share: mpz  # M_{j,l}
    recovery_key: mpz  # g^P_j(l)
    proof: ChaumPedersenProof

    def to_json(self) -> dict[str, Any]:
        return {
            "object_id": self.object_id,
            "guardian_id": self.guardian_id,
            "missing_guardian_id": self.missing_guardian_id,
            "share": to_hex(self.share),
            "recovery_key": to_hex(self.recovery_key),
            "proof": self.proof.to_json(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CiphertextCompensatedDecryptionSelection:
        return cls(
            d["object_id"],
            d["guardian_id"],
            d["missing_guardian_id"],
            from_hex(d["share"]),
            from_hex(d["recovery_key"]),
            ChaumPedersenProof.from_json(d["proof"]),
        )


@dataclass(slots=True)
class CiphertextDecryptionSelection:
    """A guardian's share of one selection: with a proof if it decrypted, with ``recovered_parts``
    (keyed by present guardian) if it was missing and its share was reconstructed."""

    object_id: str
    guardian_id: str
    share: mpz
    proof: ChaumPedersenProof | None = None
    recovered_parts: dict[str, CiphertextCompensatedDecryptionSelection] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "object_id": self.object_id,
            "guardian_id": self.guardian_id,
            "share": to_hex(self.share),
            "proof": None if self.proof is None else self.proof.to_json(),
            "recovered_parts": None
            if self.recovered_parts is None
            else {k: v.to_json() for k, v in self.recovered_parts.items()},
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CiphertextDecryptionSelection:
        parts = d.get("recovered_parts")
        return cls(
            d["object_id"],
            d["guardian_id"],
            from_hex(d["share"]),
            None if d.get("proof") is None else ChaumPedersenProof.from_json(d["proof"]),
            None
            if parts is None
            else {k: CiphertextCompensatedDecryptionSelection.from_json(v) for k, v in parts.items()},
        )


@dataclass(slots=True)
class CiphertextDecryptionContest:
    object_id: str
    guardian_id: str
    description_hash: mpz
    selections: dict[str, CiphertextDecryptionSelection]

    def to_json(self) -> dict[str, Any]:
        return {
            "object_id": self.object_id,
            "guardian_id": self.guardian_id,
            "description_hash": to_hex(self.description_hash),
            "selections": {k: s.to_json() for k, s in self.selections.items()},
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CiphertextDecryptionContest:
        return cls(
            d["object_id"],
            d["guardian_id"],
            from_hex(d["description_hash"]),
            {k: CiphertextDecryptionSelection.from_json(s) for k, s in d["selections"].items()},
        )


@dataclass(slots=True)
class CiphertextCompensatedDecryptionContest:
    object_id: str
    guardian_id: str
    missing_guardian_id: str
    description_hash: mpz
    selections: dict[str, CiphertextCompensatedDecryptionSelection]

    def to_json(self) -> dict[str, Any]:
        return {
            "object_id": self.object_id,
            "guardian_id": self.guardian_id,
            "missing_guardian_id": self.missing_guardian_id,
            "description_hash": to_hex(self.description_hash),
            "selections": {k: s.to_json() for k, s in self.selections.items()},
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CiphertextCompensatedDecryptionContest:
        return cls(
            d["object_id"],
            d["guardian_id"],
            d["missing_guardian_id"],
            from_hex(d["description_hash"]),
            {k: CiphertextCompensatedDecryptionSelection.from_json(s) for k, s in d["selections"].items()},
        )


@dataclass(slots=True)
class DecryptionShare:
    object_id: str  # the tally's or the ballot's id
    guardian_id: str
    public_key: mpz
    contests: dict[str, CiphertextDecryptionContest]

    def to_json(self) -> dict[str, Any]:
        return {
            "object_id": self.object_id,
            "guardian_id": self.guardian_id,
            "public_key": to_hex(self.public_key),
            "contests": {k: c.to_json() for k, c in self.contests.items()},
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> DecryptionShare:
        return cls(
            d["object_id"],
            d["guardian_id"],
            from_hex(d["public_key"]),
            {k: CiphertextDecryptionContest.from_json(c) for k, c in d["contests"].items()},
        )

    def selection(self, contest_id: str, selection_id: str) -> CiphertextDecryptionSelection | None:
        contest = self.contests.get(contest_id)
        return None if contest is None else contest.selections.get(selection_id)


@dataclass(slots=True)
class CompensatedDecryptionShare:
    object_id: str
    guardian_id: str  # present guardian
    missing_guardian_id: str
    public_key: mpz  # the present guardian's key, as the reference records it
    contests: dict[str, CiphertextCompensatedDecryptionContest]

    def to_json(self) -> dict[str, Any]:
        return {
            "object_id": self.object_id,
            "guardian_id": self.guardian_id,
            "missing_guardian_id": self.missing_guardian_id,
            "public_key": to_hex(self.public_key),
            "contests": {k: c.to_json() for k, c in self.contests.items()},
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CompensatedDecryptionShare:
        return cls(
            d["object_id"],
            d["guardian_id"],
            d["missing_guardian_id"],
            from_hex(d["public_key"]),
            {k: CiphertextCompensatedDecryptionContest.from_json(c) for k, c in d["contests"].items()},
        )
