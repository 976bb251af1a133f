"""Ballots (the reference's ``electionguard.ballot``): plaintext, ciphertext and submitted; their JSON,
ballot codes, and a compact binary codec for storage.

JSON is exactly what ``electionguard.serialize.to_raw`` writes (group elements as upper-case hex), so
ballots move between this package and the reference. The binary form stores each element mod p in 512
bytes and each element mod q in 32 bytes (about half the size of the JSON and much faster to parse).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Any

from gmpy2 import mpz

from compute.constants import ZERO, P, Q
from compute.elgamal import Ciphertext
from compute.group import (
    FieldError,
    field_path,
    from_hex_checked,
    hex_field,
    int_field,
    mpz_from_bytes,
    str_field,
    to_hex,
)
from compute.hashed_elgamal import HashedElGamalCiphertext
from compute.hashing import hash_elems
from compute.selection_proofs import (
    SELECTION_LIMIT_USAGE,
    SELECTION_VALUE_USAGE,
    ConstantChaumPedersenProof,
    DisjunctiveChaumPedersenProof,
)


class BallotBoxState(IntEnum):
    """As the reference: CAST 1, SPOILED 2, UNKNOWN 999 (its JSON writes these numbers)."""

    CAST = 1
    SPOILED = 2
    UNKNOWN = 999


def get_hash_for_device(device_id: int, session_id: int, launch_code: int, location: str) -> mpz:
    """The starting code of an encryption device (reference ``ballot_code.get_hash_for_device``)."""
    return hash_elems(device_id, session_id, launch_code, location)


def get_ballot_code(prev_code: mpz, timestamp: int, ballot_hash: mpz) -> mpz:
    """A ballot's code, chained from the previous code (or the device hash)."""
    return hash_elems(prev_code, timestamp, ballot_hash)


def _opt_hex(x: mpz | None) -> str | None:
    return None if x is None else to_hex(x)


# Ciphertext ballots come from voters: from_json checks every field against what the reference writes
# and what the binary codec stores (elements below p or q, integers within their stored widths, strings
# where strings belong), raising FieldError with the field's path, so a bad value is a refusal naming it
# rather than an error deep in hashing, validation or the codec.
INT32 = (-(2**31), 2**31 - 1)  # sequence orders (codec ">i")
INT64 = (-(2**63), 2**63 - 1)  # timestamps (codec ">q")
_LABEL_MAX = 64  # an id longer than this is named by its index, so no error echoes a long input


def _opt_hex_field(d: dict[str, Any], key: str, bound: int) -> mpz | None:
    x = d.get(key)
    return None if x is None else from_hex_checked(x, bound, key)


def _obj(d: dict[str, Any], key: str, optional: bool = False) -> dict[str, Any] | None:
    x = d.get(key)
    if x is None and optional:
        return None
    if not isinstance(x, dict):
        raise FieldError(key, "missing" if key not in d else "must be an object")
    return x


def _bool_field(d: dict[str, Any], key: str) -> bool:
    x = d.get(key, False)
    if not isinstance(x, bool):
        raise FieldError(key, "must be true or false")
    return x


def _ciphertext(d: dict[str, Any], key: str) -> Ciphertext:
    c = _obj(d, key)
    assert c is not None
    with field_path(key):
        return Ciphertext(hex_field(c, "pad", P), hex_field(c, "data", P))


def _objects(d: dict[str, Any], key: str) -> list[tuple[str, dict[str, Any]]]:
    """The objects of the list ``d[key]``, each with the path prefix that names it (its id, or its index
    when the id is not a short string)."""
    xs = d.get(key)
    if not isinstance(xs, list):
        raise FieldError(key, "missing" if key not in d else "must be a list")
    out = []
    for i, x in enumerate(xs):
        if not isinstance(x, dict):
            raise FieldError(f"{key}[{i}]", "must be an object")
        oid = x.get("object_id")
        label = oid if isinstance(oid, str) and 0 < len(oid) <= _LABEL_MAX else str(i)
        out.append((f"{key}[{label}]", x))
    return out


# ---------------------------------------------------------------- plaintext


@dataclass(frozen=True, slots=True)
class PlaintextBallotSelection:
    object_id: str
    vote: int
    is_placeholder_selection: bool = False
    write_in: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "object_id": self.object_id,
            "vote": self.vote,
            "is_placeholder_selection": self.is_placeholder_selection,
            "write_in": self.write_in,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PlaintextBallotSelection:
        return cls(
            d["object_id"], int(d["vote"]), bool(d.get("is_placeholder_selection", False)), d.get("write_in")
        )


@dataclass(frozen=True, slots=True)
class PlaintextBallotContest:
    object_id: str
    ballot_selections: tuple[PlaintextBallotSelection, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "object_id": self.object_id,
            "ballot_selections": [s.to_json() for s in self.ballot_selections],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PlaintextBallotContest:
        return cls(
            d["object_id"],
            tuple(PlaintextBallotSelection.from_json(s) for s in d.get("ballot_selections") or []),
        )


@dataclass(frozen=True, slots=True)
class PlaintextBallot:
    object_id: str
    style_id: str
    contests: tuple[PlaintextBallotContest, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "object_id": self.object_id,
            "style_id": self.style_id,
            "contests": [c.to_json() for c in self.contests],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PlaintextBallot:
        return cls(
            d["object_id"], d["style_id"], tuple(PlaintextBallotContest.from_json(c) for c in d["contests"])
        )


# ---------------------------------------------------------------- ciphertext


def selection_crypto_hash(object_id: str, description_hash: mpz, ciphertext: Ciphertext) -> mpz:
    return hash_elems(object_id, description_hash, ciphertext.crypto_hash())


@dataclass(frozen=True, slots=True)
class CiphertextBallotSelection:
    object_id: str
    sequence_order: int
    description_hash: mpz
    ciphertext: Ciphertext
    crypto_hash: mpz
    is_placeholder_selection: bool = False
    nonce: mpz | None = None
    proof: DisjunctiveChaumPedersenProof | None = None

    def crypto_hash_with(self, encryption_seed: mpz) -> mpz:
        return selection_crypto_hash(self.object_id, encryption_seed, self.ciphertext)

    def to_json(self) -> dict[str, Any]:
        return {
            "object_id": self.object_id,
            "sequence_order": self.sequence_order,
            "description_hash": to_hex(self.description_hash),
            "ciphertext": self.ciphertext.to_json(),
            "crypto_hash": to_hex(self.crypto_hash),
            "is_placeholder_selection": self.is_placeholder_selection,
            "nonce": _opt_hex(self.nonce),
            "proof": None if self.proof is None else self.proof.to_json(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CiphertextBallotSelection:
        pr = _obj(d, "proof", optional=True)
        proof = None
        if pr is not None:
            with field_path("proof"):
                proof = DisjunctiveChaumPedersenProof.from_json(pr)
        return cls(
            str_field(d, "object_id"),
            int_field(d, "sequence_order", *INT32),
            hex_field(d, "description_hash", Q),
            _ciphertext(d, "ciphertext"),
            hex_field(d, "crypto_hash", Q),
            _bool_field(d, "is_placeholder_selection"),
            _opt_hex_field(d, "nonce", Q),
            proof,
        )


def contest_crypto_hash(object_id: str, selections: tuple[CiphertextBallotSelection, ...], seed: mpz) -> mpz:
    """As the reference: over the selections' crypto hashes in sequence order; 0 if there are none."""
    if not selections:
        return ZERO
    hashes = [s.crypto_hash for s in sorted(selections, key=lambda s: s.sequence_order)]
    return hash_elems(object_id, seed, *hashes)


@dataclass(frozen=True, slots=True)
class CiphertextBallotContest:
    object_id: str
    sequence_order: int
    description_hash: mpz
    ballot_selections: tuple[CiphertextBallotSelection, ...]
    ciphertext_accumulation: Ciphertext
    crypto_hash: mpz
    nonce: mpz | None = None
    proof: ConstantChaumPedersenProof | None = None
    extended_data: HashedElGamalCiphertext | None = None

    def crypto_hash_with(self, encryption_seed: mpz) -> mpz:
        return contest_crypto_hash(self.object_id, self.ballot_selections, encryption_seed)

    def to_json(self) -> dict[str, Any]:
        return {
            "object_id": self.object_id,
            "sequence_order": self.sequence_order,
            "description_hash": to_hex(self.description_hash),
            "ballot_selections": [s.to_json() for s in self.ballot_selections],
            "ciphertext_accumulation": self.ciphertext_accumulation.to_json(),
            "crypto_hash": to_hex(self.crypto_hash),
            "nonce": _opt_hex(self.nonce),
            "proof": None if self.proof is None else self.proof.to_json(),
            "extended_data": None if self.extended_data is None else self.extended_data.to_json(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CiphertextBallotContest:
        pr, ext = _obj(d, "proof", optional=True), _obj(d, "extended_data", optional=True)
        proof = extended = None
        if pr is not None:
            with field_path("proof"):
                proof = ConstantChaumPedersenProof.from_json(pr)
        if ext is not None:
            with field_path("extended_data"):
                extended = HashedElGamalCiphertext.from_json(ext)
        selections = []
        for path, s in _objects(d, "ballot_selections"):
            with field_path(path):
                selections.append(CiphertextBallotSelection.from_json(s))
        return cls(
            str_field(d, "object_id"),
            int_field(d, "sequence_order", *INT32),
            hex_field(d, "description_hash", Q),
            tuple(selections),
            _ciphertext(d, "ciphertext_accumulation"),
            hex_field(d, "crypto_hash", Q),
            _opt_hex_field(d, "nonce", Q),
            proof,
            extended,
        )


def ballot_crypto_hash(
    object_id: str, manifest_hash: mpz, contests: tuple[CiphertextBallotContest, ...]
) -> mpz:
    """The hash a ballot is made with (``create_ballot_hash``: contests in sequence order)."""
    hashes = [c.crypto_hash for c in sorted(contests, key=lambda c: c.sequence_order)]
    return hash_elems(object_id, manifest_hash, *hashes)


def _ballot_json(b: CiphertextBallot | SubmittedBallot) -> dict[str, Any]:
    return {
        "object_id": b.object_id,
        "style_id": b.style_id,
        "manifest_hash": to_hex(b.manifest_hash),
        "code_seed": to_hex(b.code_seed),
        "contests": [c.to_json() for c in b.contests],
        "code": to_hex(b.code),
        "timestamp": b.timestamp,
        "crypto_hash": to_hex(b.crypto_hash),
        "nonce": _opt_hex(b.nonce),
    }


def _ballot_fields(d: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise FieldError("ballot", "must be an object")
    contests = []
    for path, c in _objects(d, "contests"):
        with field_path(path):
            contests.append(CiphertextBallotContest.from_json(c))
    return {
        "object_id": str_field(d, "object_id"),
        "style_id": str_field(d, "style_id"),
        "manifest_hash": hex_field(d, "manifest_hash", Q),
        "code_seed": hex_field(d, "code_seed", Q),
        "contests": tuple(contests),
        "code": hex_field(d, "code", Q),
        "timestamp": int_field(d, "timestamp", *INT64),
        "crypto_hash": hex_field(d, "crypto_hash", Q),
        "nonce": _opt_hex_field(d, "nonce", Q),
    }


@dataclass(frozen=True, slots=True)
class CiphertextBallot:
    """An encrypted ballot; ``nonce`` (the master nonce) and the contests' nonces are secrets."""

    object_id: str
    style_id: str
    manifest_hash: mpz
    code_seed: mpz
    contests: tuple[CiphertextBallotContest, ...]
    code: mpz
    timestamp: int
    crypto_hash: mpz
    nonce: mpz | None

    def crypto_hash_with(self, encryption_seed: mpz) -> mpz:
        """As the reference's ``crypto_hash_with`` (contests in stored order; 0 if there are none)."""
        if not self.contests:
            return ZERO
        return hash_elems(self.object_id, encryption_seed, *[c.crypto_hash for c in self.contests])

    def to_json(self) -> dict[str, Any]:
        return _ballot_json(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CiphertextBallot:
        return cls(**_ballot_fields(d))


@dataclass(frozen=True, slots=True)
class SubmittedBallot:
    """A cast or spoiled ballot: proofs kept, every nonce dropped."""

    object_id: str
    style_id: str
    manifest_hash: mpz
    code_seed: mpz
    contests: tuple[CiphertextBallotContest, ...]
    code: mpz
    timestamp: int
    crypto_hash: mpz
    nonce: mpz | None
    state: BallotBoxState

    def crypto_hash_with(self, encryption_seed: mpz) -> mpz:
        if not self.contests:
            return ZERO
        return hash_elems(self.object_id, encryption_seed, *[c.crypto_hash for c in self.contests])

    def to_json(self) -> dict[str, Any]:
        d = _ballot_json(self)
        d["state"] = int(self.state)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SubmittedBallot:
        fields = _ballot_fields(d)
        state = int_field(d, "state", *INT64)
        if state not in set(BallotBoxState):
            raise FieldError("state", "must be 1 (cast), 2 (spoiled) or 999 (unknown)")
        return cls(**fields, state=BallotBoxState(state))


def make_submitted(ballot: CiphertextBallot, state: BallotBoxState) -> SubmittedBallot:
    """As the reference's ``submit_ballot``: the same ballot with its state and without any nonce."""
    contests = tuple(
        replace(c, nonce=None, ballot_selections=tuple(replace(s, nonce=None) for s in c.ballot_selections))
        for c in ballot.contests
    )
    return SubmittedBallot(
        ballot.object_id,
        ballot.style_id,
        ballot.manifest_hash,
        ballot.code_seed,
        contests,
        ballot.code,
        ballot.timestamp,
        ballot_crypto_hash(ballot.object_id, ballot.manifest_hash, contests),
        None,
        BallotBoxState(state),
    )


def without_extended_data(ballot: SubmittedBallot) -> SubmittedBallot:
    """The ballot without its contests' ``extended_data``. The reference fills it with a hashed-ElGamal
    encryption of the contest's error and write-ins, but no hash or proof covers it, nothing checks that
    it decrypts to anything and nothing decrypts it: on a submitted ballot it is 512 bytes the submitter
    chose, which could mark a cast ballot for a vote buyer. Dropping it changes no hash or code."""
    if all(c.extended_data is None for c in ballot.contests):
        return ballot
    return replace(ballot, contests=tuple(replace(c, extended_data=None) for c in ballot.contests))


# ---------------------------------------------------------------- binary codec

_MAGIC = b"AVB1"
_PBYTES, _QBYTES = 512, 32


class _Writer:
    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def p(self, x: int) -> None:
        self.buf += int(x).to_bytes(_PBYTES, "big")

    def q(self, x: int) -> None:
        self.buf += int(x).to_bytes(_QBYTES, "big")

    def s(self, text: str) -> None:
        b = text.encode("utf-8")
        self.buf += struct.pack(">I", len(b)) + b

    def i(self, fmt: str, *v: int) -> None:
        self.buf += struct.pack(fmt, *v)


def _w_usage(w: _Writer, usage: str, default: str) -> None:
    if usage == default:
        w.i(">B", 0)
    else:
        w.i(">B", 1)
        w.s(usage)


def encode_submitted_ballot(b: SubmittedBallot) -> bytes:
    """Compact binary form of a submitted ballot (fixed-width elements; nonces are never stored)."""
    w = _Writer()
    w.buf += _MAGIC
    w.s(b.object_id)
    w.s(b.style_id)
    w.q(b.manifest_hash)
    w.q(b.code_seed)
    w.q(b.code)
    w.i(">qI", b.timestamp, int(b.state))
    w.q(b.crypto_hash)
    w.i(">H", len(b.contests))
    for c in b.contests:
        w.s(c.object_id)
        w.i(">i", c.sequence_order)
        w.q(c.description_hash)
        w.p(c.ciphertext_accumulation.pad)
        w.p(c.ciphertext_accumulation.data)
        w.q(c.crypto_hash)
        if c.proof is None:
            w.i(">B", 0)
        else:
            w.i(">BQ", 1, c.proof.constant)
            w.p(c.proof.pad)
            w.p(c.proof.data)
            w.q(c.proof.challenge)
            w.q(c.proof.response)
            _w_usage(w, c.proof.usage, SELECTION_LIMIT_USAGE)
        if c.extended_data is None:
            w.i(">B", 0)
        else:
            w.i(">B", 1)
            w.p(c.extended_data.pad)
            w.s(c.extended_data.data)
            w.s(c.extended_data.mac)
        w.i(">H", len(c.ballot_selections))
        for s in c.ballot_selections:
            w.s(s.object_id)
            w.i(">iB", s.sequence_order, int(s.is_placeholder_selection))
            w.q(s.description_hash)
            w.p(s.ciphertext.pad)
            w.p(s.ciphertext.data)
            w.q(s.crypto_hash)
            pr = s.proof
            if pr is None:
                w.i(">B", 0)
            else:
                w.i(">B", 1)
                for x in (pr.proof_zero_pad, pr.proof_zero_data, pr.proof_one_pad, pr.proof_one_data):
                    w.p(x)
                for x in (
                    pr.proof_zero_challenge,
                    pr.proof_one_challenge,
                    pr.challenge,
                    pr.proof_zero_response,
                    pr.proof_one_response,
                ):
                    w.q(x)
                _w_usage(w, pr.usage, SELECTION_VALUE_USAGE)
    return bytes(w.buf)


# The decoder reads each run of fixed-width fields with one precompiled ``struct`` (elements as raw bytes,
# then ``mpz_from_bytes``): a tally task decodes every ballot of its chunk, and a reader call per field
# made that 1.7x slower (191 against 110 us a ballot of benchmarks/bench_elections.py's election).
# Field for field the layout ``encode_submitted_ballot`` writes.
_HEAD = struct.Struct(f">{_QBYTES}s{_QBYTES}s{_QBYTES}sqI{_QBYTES}sH")  # hashes, code, timestamp, state
_CONTEST = struct.Struct(f">i{_QBYTES}s{_PBYTES}s{_PBYTES}s{_QBYTES}sB")  # ..., its proof's flag
_CONTEST_PROOF = struct.Struct(f">Q{_PBYTES}s{_PBYTES}s{_QBYTES}s{_QBYTES}sB")  # ..., usage flag
_EXTENDED_PAD = struct.Struct(f">{_PBYTES}s")
_SELECTION = struct.Struct(f">iB{_QBYTES}s{_PBYTES}s{_PBYTES}s{_QBYTES}sB")  # ..., its proof's flag
_SELECTION_PROOF = struct.Struct(f">{_PBYTES}s{_PBYTES}s{_PBYTES}s{_PBYTES}s" + f"{_QBYTES}s" * 5 + "B")
_U8, _U16, _U32 = struct.Struct(">B"), struct.Struct(">H"), struct.Struct(">I")
_TRUNCATED = "truncated ballot record"


def decode_submitted_ballot(data: bytes) -> SubmittedBallot:
    view = memoryview(data)
    size = len(view)
    num = mpz_from_bytes
    off = 0

    def fields(s: struct.Struct) -> tuple[Any, ...]:
        nonlocal off
        if off + s.size > size:
            raise ValueError(_TRUNCATED)
        out = s.unpack_from(view, off)
        off += s.size
        return out

    def text() -> str:
        nonlocal off
        if off + 4 > size:
            raise ValueError(_TRUNCATED)
        end = off + 4 + _U32.unpack_from(view, off)[0]
        if end > size:
            raise ValueError(_TRUNCATED)
        s = str(view[off + 4 : end], "utf-8")
        off = end
        return s

    def usage(flag: int, default: str) -> str:
        return default if flag == 0 else text()

    if size < 4:
        raise ValueError(_TRUNCATED)
    if bytes(view[:4]) != _MAGIC:
        raise ValueError("not an encoded submitted ballot")
    off = 4
    object_id, style_id = text(), text()
    manifest_hash, code_seed, code, timestamp, state, crypto_hash, ncontests = fields(_HEAD)
    contests = []
    for _ in range(ncontests):
        cid = text()
        cseq, cdh, acc_pad, acc_data, chash, flag = fields(_CONTEST)
        cproof = None
        if flag:
            constant, pad, dat, ch, resp, uflag = fields(_CONTEST_PROOF)
            cproof = ConstantChaumPedersenProof(
                num(pad), num(dat), num(ch), num(resp), constant, usage(uflag, SELECTION_LIMIT_USAGE)
            )
        ext = None
        if fields(_U8)[0]:
            ext = HashedElGamalCiphertext(num(fields(_EXTENDED_PAD)[0]), text(), text())
        sels = []
        for _ in range(fields(_U16)[0]):
            sid = text()
            sseq, ph, sdh, pad, dat, shash, flag = fields(_SELECTION)
            proof = None
            if flag:
                a0, b0, a1, b1, c0, c1, c, v0, v1, uflag = fields(_SELECTION_PROOF)
                proof = DisjunctiveChaumPedersenProof(
                    num(a0),
                    num(b0),
                    num(a1),
                    num(b1),
                    num(c0),
                    num(c1),
                    num(c),
                    num(v0),
                    num(v1),
                    usage(uflag, SELECTION_VALUE_USAGE),
                )
            sels.append(
                CiphertextBallotSelection(
                    sid, sseq, num(sdh), Ciphertext(num(pad), num(dat)), num(shash), bool(ph), None, proof
                )
            )
        contests.append(
            CiphertextBallotContest(
                cid,
                cseq,
                num(cdh),
                tuple(sels),
                Ciphertext(num(acc_pad), num(acc_data)),
                num(chash),
                None,
                cproof,
                ext,
            )
        )
    if off != size:
        raise ValueError("trailing bytes after ballot record")
    return SubmittedBallot(
        object_id,
        style_id,
        num(manifest_hash),
        num(code_seed),
        tuple(contests),
        num(code),
        timestamp,
        num(crypto_hash),
        None,
        BallotBoxState(state),
    )
