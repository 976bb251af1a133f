"""The service's only door into compute/: every ElectionGuard call the service makes goes through here,
so a change in compute/'s API touches this file alone. Errors come out as service DomainErrors with
reasons fit for a client (they name objects, never secrets).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from gmpy2 import mpz

from compute.ballot import (
    BallotBoxState,
    PlaintextBallot,
    SubmittedBallot,
    decode_submitted_ballot,
    encode_submitted_ballot,
    get_hash_for_device,
    without_extended_data,
)
from compute.constants import P
from compute.context import ElectionContext
from compute.elgamal import encrypt as elgamal_encrypt
from compute.encrypt import EncryptionError, encrypt_ballot, submit
from compute.fingerprints import repeat_message, repeats_among, selection_fingerprints
from compute.group import FieldError, from_hex, g_pow_p, pow_p, rand_q, to_hex
from compute.guardian import GuardianRecord, PrivateGuardianRecord
from compute.keyceremony import KeyCeremonyError, run_key_ceremony
from compute.manifest import InternalManifest, Manifest, build_simple_manifest
from compute.polynomial import verify_polynomial_coordinate
from compute.validate import BallotInvalid, validate_ballot, validate_ballots
from service.errors import Invalid

STATES = {"cast": BallotBoxState.CAST, "spoil": BallotBoxState.SPOILED, "spoiled": BallotBoxState.SPOILED}


# --------------------------------------------------------------------------------------------- manifests


def parse_manifest(manifest: Any) -> tuple[dict[str, Any], str]:
    """Check a reference manifest JSON; returns it unchanged (the record keeps the caller's JSON) and
    its hash in the reference's hex form."""
    if not isinstance(manifest, dict):
        raise Invalid("manifest must be a JSON object")
    try:
        m = Manifest.from_json(manifest)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise Invalid(f"manifest is malformed: {type(exc).__name__}: {exc}") from exc
    if not m.is_valid():
        raise Invalid("manifest is not valid (duplicate ids, dangling references or an invalid contest)")
    if not m.contests:
        raise Invalid("manifest has no contests")
    return manifest, to_hex(m.crypto_hash())


def simple_manifest(
    candidate_names: list[str], party_names: list[str] | None, max_choices: int, election_name: str
) -> tuple[dict[str, Any], str]:
    try:
        m = build_simple_manifest(candidate_names, party_names, max_choices, election_name=election_name)
    except ValueError as exc:
        raise Invalid(str(exc)) from exc
    return m.to_json(), to_hex(m.crypto_hash())


@lru_cache(maxsize=32)
def _internal_manifest(manifest_text: str) -> InternalManifest:
    return InternalManifest.from_manifest(Manifest.from_json(json.loads(manifest_text)))


def internal_manifest(manifest: dict[str, Any]) -> InternalManifest:
    # Cached by content: building one hashes every contest, and every ballot submission needs it.
    return _internal_manifest(json.dumps(manifest, sort_keys=True))


def context_of(context: dict[str, Any]) -> ElectionContext:
    return ElectionContext.from_json(context)


# --------------------------------------------------------------------------------------------- keys


def key_ceremony(
    number_of_guardians: int, quorum: int, manifest_hash: str, guardian_ids: list[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """(private records, public guardian records, context), all as the reference's JSON."""
    try:
        privates, records, context = run_key_ceremony(
            number_of_guardians, quorum, from_hex(manifest_hash), guardian_ids
        )
    except KeyCeremonyError as exc:
        raise Invalid(str(exc)) from exc
    return [p.to_json() for p in privates], [r.to_json() for r in records], context.to_json()


def parse_private_record(data: Any, guardian_id: str) -> PrivateGuardianRecord:
    try:
        rec = PrivateGuardianRecord.from_json(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise Invalid("the credential file's content is not a private guardian record") from exc
    if rec.guardian_id != guardian_id:
        raise Invalid(f"the credential file is for guardian {rec.guardian_id!r}, not {guardian_id!r}")
    return rec


def check_guardian_key(private: PrivateGuardianRecord, public_record: dict[str, Any]) -> None:
    """A test decryption before any work starts: the private key must decrypt a fresh ciphertext made
    under the guardian's published key (and the key pair must be that published key)."""
    public = GuardianRecord.from_json(public_record)
    secret = private.election_keys.key_pair.secret_key
    if (
        private.election_keys.sequence_order != public.sequence_order
        or g_pow_p(secret) != public.election_public_key
    ):
        raise Invalid(f"the credentials do not hold guardian {public.guardian_id!r}'s published key")
    m = secrets.randbelow(1000)
    ct = elgamal_encrypt(m, rand_q(), public.election_public_key)
    if ct.data * pow(int(pow_p(ct.pad, secret)), -1, int(P)) % P != g_pow_p(m):
        raise Invalid(f"test decryption with guardian {public.guardian_id!r}'s credentials failed")


def check_backups(private: PrivateGuardianRecord, missing_records: list[dict[str, Any]]) -> None:
    """The guardian can compensate for each missing one: it holds that guardian's backup, the backup
    opens, and the coordinate lies on the missing guardian's committed polynomial."""
    for rec in missing_records:
        missing = GuardianRecord.from_json(rec)
        try:
            coordinate = private.coordinate_from(missing.guardian_id)
        except (KeyError, ValueError) as exc:
            raise Invalid(str(exc.args[0]) if exc.args else type(exc).__name__) from exc
        if not verify_polynomial_coordinate(coordinate, private.sequence_order, missing.election_commitments):
            raise Invalid(
                f"guardian {private.guardian_id!r}'s backup from {missing.guardian_id!r} does not match"
                " that guardian's commitments"
            )


# --------------------------------------------------------------------------------------------- ballots


def ballot_state(action: str) -> BallotBoxState:
    try:
        return STATES[action.lower()]
    except (KeyError, AttributeError):
        raise Invalid(f"ballot action must be 'cast' or 'spoil', got {action!r}") from None


def parse_submitted(ballot: Any, state: BallotBoxState) -> SubmittedBallot:
    """A voter's ballot JSON, every field checked (a bad one is refused naming its path), without its
    ``extended_data`` (``without_extended_data``: a channel no hash covers)."""
    if not isinstance(ballot, dict):
        raise Invalid("ballot must be a JSON object")
    oid = ballot.get("object_id")
    name = oid if isinstance(oid, str) and len(oid) <= 256 else "?"
    try:
        return without_extended_data(SubmittedBallot.from_json({**ballot, "state": int(state)}))
    except FieldError as exc:
        raise Invalid(f"ballot {name} is malformed: {exc}") from exc
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise Invalid(f"ballot {name} is malformed: {type(exc).__name__}: {exc}") from exc


def check_ballot_election(ballot: SubmittedBallot, manifest_hash: str) -> None:
    if ballot.manifest_hash != from_hex(manifest_hash):
        raise Invalid(f"ballot {ballot.object_id} is for another election (its manifest hash differs)")


def validate_one(ballot: SubmittedBallot, manifest: dict[str, Any], context: dict[str, Any]) -> None:
    try:
        validate_ballot(ballot, internal_manifest(manifest), context_of(context))
    except BallotInvalid as exc:
        raise Invalid(str(exc)) from exc


def validate_many(
    ballots: list[SubmittedBallot], manifest: dict[str, Any], context: dict[str, Any]
) -> list[str]:
    """Reasons, one per invalid ballot (empty when all are valid); proofs are checked in batches."""
    return [f.message for f in validate_ballots(ballots, internal_manifest(manifest), context_of(context))]


def encode(ballot: SubmittedBallot) -> tuple[bytes, str]:
    """The compact stored form and the ballot code (hex); never any ``extended_data``."""
    return encode_submitted_ballot(without_extended_data(ballot)), to_hex(ballot.code)


def decode(payload: bytes) -> SubmittedBallot:
    # A row stored before extended_data was dropped still holds it: it is not published either.
    return without_extended_data(decode_submitted_ballot(payload))


def fingerprints(ballot: SubmittedBallot) -> tuple[bytes, ...]:
    """The fingerprints of every selection ciphertext (placeholders included): a clone repeats one."""
    return tuple(selection_fingerprints(ballot))


def repeats(fingerprinted: list[tuple[str, tuple[bytes, ...]]]) -> list[str]:
    """A reason for each ballot that repeats a selection ciphertext of an earlier one in the list."""
    return [repeat_message(b, original) for b, original in repeats_among(fingerprinted)]


def repeat_reason(ballot_id: str, original_id: str) -> str:
    return repeat_message(ballot_id, original_id)


def device_seed(election_id: int) -> mpz:
    """The code seed of the service's own encryption device for this election."""
    return get_hash_for_device(int(election_id), 0, 0, "amarvote-service")


@dataclass(frozen=True, slots=True)
class Encryption:
    """A plaintext ballot the service encrypted, before the voter's decision.

    ``nonce`` (the master nonce, hex) and ``plaintext`` open the encryption for a Benaloh challenge: they
    leave the service only for a ballot stored as spoiled, and are never stored. They are kept out of
    ``repr`` so that no log line or traceback can print them.
    """

    ballot: SubmittedBallot  # state UNKNOWN until the voter decides; carries no nonce
    nonce: str = field(repr=False)
    plaintext: dict[str, Any] = field(repr=False)

    @property
    def object_id(self) -> str:
        return self.ballot.object_id

    @property
    def code(self) -> str:
        """The tracking code, as receipts give it."""
        return to_hex(self.ballot.code)

    def submitted(self, state: BallotBoxState) -> SubmittedBallot:
        # The state enters neither the ballot's hash nor its code: deciding changes nothing the voter saw.
        return replace(self.ballot, state=state)


def parse_plaintext(plaintext: Any, manifest: dict[str, Any]) -> PlaintextBallot:
    if not isinstance(plaintext, dict):
        raise Invalid("plaintext ballot must be a JSON object")
    try:
        pb = PlaintextBallot.from_json(plaintext)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise Invalid(f"plaintext ballot is malformed: {type(exc).__name__}: {exc}") from exc
    _check_plaintext(pb, internal_manifest(manifest))
    return pb


def encrypt_plaintext(
    plaintext: Any, manifest: dict[str, Any], context: dict[str, Any], election_id: int
) -> Encryption:
    """Encrypt a plaintext ballot with a fresh master nonce, for the voter to cast or challenge."""
    pb = parse_plaintext(plaintext, manifest)
    try:
        ct = encrypt_ballot(pb, internal_manifest(manifest), context_of(context), device_seed(election_id))
    except EncryptionError as exc:
        raise Invalid(f"ballot {pb.object_id} cannot be encrypted: {exc}") from exc
    assert ct.nonce is not None
    # The service's extended_data is no voter's channel, but it is not kept either: one rule for every
    # stored ballot, and nothing ever decrypts it.
    ballot = without_extended_data(submit(ct, BallotBoxState.UNKNOWN))
    return Encryption(ballot, to_hex(ct.nonce), pb.to_json())


def _check_plaintext(pb: PlaintextBallot, internal: InternalManifest) -> None:
    """Refuse what the encryptor would silently accept: unknown or repeated contests or selections (it
    would keep the first and drop the rest), votes other than 0/1, more votes than a contest allows (the
    reference rejects overvotes at encryption too)."""
    try:
        contests = {c.object_id: c for c in internal.get_contests_for(pb.style_id)}
    except KeyError as exc:
        raise Invalid(f"ballot {pb.object_id}: {exc.args[0]}") from None
    seen_contests: set[str] = set()
    for c in pb.contests:
        desc = contests.get(c.object_id)
        if desc is None:
            raise Invalid(f"ballot {pb.object_id}: contest {c.object_id} is not on style {pb.style_id}")
        if c.object_id in seen_contests:
            raise Invalid(f"ballot {pb.object_id}: contest {c.object_id} appears more than once")
        seen_contests.add(c.object_id)
        known = {s.object_id for s in desc.ballot_selections}
        seen: set[str] = set()
        total = 0
        for s in c.ballot_selections:
            if s.object_id not in known:
                raise Invalid(
                    f"ballot {pb.object_id}, contest {c.object_id}: unknown selection {s.object_id}"
                )
            if s.object_id in seen:
                raise Invalid(
                    f"ballot {pb.object_id}, contest {c.object_id}: selection {s.object_id}"
                    " appears more than once"
                )
            seen.add(s.object_id)
            if s.vote not in (0, 1):
                raise Invalid(f"ballot {pb.object_id}, selection {s.object_id}: a vote is 0 or 1")
            total += s.vote
        allowed = desc.votes_allowed if desc.votes_allowed is not None else desc.number_elected
        if total > allowed:
            raise Invalid(f"ballot {pb.object_id}, contest {c.object_id}: {total} votes, {allowed} allowed")
