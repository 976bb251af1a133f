"""What gets decrypted: a *target*, the ciphertexts of a CiphertextTally (contests -> selections) or of a
submitted ballot (contests -> ballot_selections, placeholders included, as the reference's ballot shares
are), in one shape for making, checking and combining shares.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gmpy2 import mpz

from compute.elgamal import Ciphertext
from compute.group import from_hex, to_hex
from compute.tally import CiphertextTally


@dataclass(slots=True)
class TargetContest:
    object_id: str
    description_hash: mpz
    selections: list[tuple[str, Ciphertext]]


@dataclass(slots=True)
class Target:
    object_id: str
    contests: list[TargetContest]

    def items(self) -> list[tuple[str, str, Ciphertext]]:
        return [(c.object_id, sid, ct) for c in self.contests for sid, ct in c.selections]

    def to_json(self) -> dict[str, Any]:
        """What a guardian decrypts, as the service serves it (``GET .../decryption-units/{id}``):
        ``{object_id, contests: [{object_id, description_hash, selections: [{object_id, ciphertext}]}]}``,
        contests and selections in the order the shares are made in (placeholders of a ballot included)."""
        return {
            "object_id": self.object_id,
            "contests": [
                {
                    "object_id": c.object_id,
                    "description_hash": to_hex(c.description_hash),
                    "selections": [
                        {"object_id": sid, "ciphertext": ct.to_json()} for sid, ct in c.selections
                    ],
                }
                for c in self.contests
            ],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Target:
        return cls(
            d["object_id"],
            [
                TargetContest(
                    c["object_id"],
                    from_hex(c["description_hash"]),
                    [(s["object_id"], Ciphertext.from_json(s["ciphertext"])) for s in c["selections"]],
                )
                for c in d["contests"]
            ],
        )


def target_of(obj: CiphertextTally | Any) -> Target:
    """A tally, or a submitted ballot (reference field names: contests, ballot_selections, ciphertext)."""
    if isinstance(obj, Target):
        return obj
    if isinstance(obj, CiphertextTally):
        return Target(
            obj.object_id,
            [
                TargetContest(
                    c.object_id,
                    c.description_hash,
                    [(s.object_id, s.ciphertext) for s in c.selections.values()],
                )
                for c in obj.contests.values()
            ],
        )
    return Target(
        obj.object_id,
        [
            TargetContest(
                c.object_id, c.description_hash, [(s.object_id, s.ciphertext) for s in c.ballot_selections]
            )
            for c in obj.contests
        ],
    )
