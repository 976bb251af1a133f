"""Checking a decryption unit's share that a guardian computed on its own machine and uploaded.

A unit's document is the one the service's own decryption body writes (``bridge/tasks/decryption.py``):
for an aggregate slice, the reference's ``DecryptionShare`` (or ``CompensatedDecryptionShare``) JSON of
the slice; for a run of spoiled ballots, ``{"spoiled_ballots": {ballot id: share JSON}}``. Two steps:

- ``read_unit_share``: structure, cheap (no exponentiation): the document parses, names the right
  guardian (and missing guardian), object, public key and, for a compensated share, the recovery key
  the missing guardian's commitments give; and it covers exactly the unit's objects, contests and
  selections, each with one proof. It returns the document normalised (re-serialised from the parsed
  share, so nothing but the reference's fields is kept) and the Chaum-Pedersen statements to check.
- ``verify_shares`` (``compute.chaum_pedersen``) on those statements: every proof, batched, a failing
  batch bisected so that every bad share is named.

Problems name the guardian (and missing guardian), the unit, the object (a spoiled ballot), contest and
selection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from gmpy2 import mpz

from compute.chaum_pedersen import ChaumPedersenProof, ShareStatement, verify_shares
from compute.context import ElectionContext
from compute.decryption import (
    compute_compensated_decryption_shares,
    compute_decryption_shares,
    compute_recovery_public_key,
)
from compute.decryption_share import (
    CiphertextCompensatedDecryptionSelection,
    CompensatedDecryptionShare,
    DecryptionShare,
)
from compute.decryption_target import Target
from compute.guardian import GuardianRecord, PrivateGuardianRecord

MAX_PROBLEMS = 50


@dataclass(slots=True)
class UnitShare:
    """A unit's uploaded share after the structural checks: the normalised document, the statements to
    verify, and the problems found (empty when the document may be checked further)."""

    document: dict[str, Any] | None
    statements: list[ShareStatement]
    problems: list[str]


def _who(guardian: GuardianRecord, missing: GuardianRecord | None) -> str:
    if missing is None:
        return f"guardian {guardian.guardian_id}"
    return f"guardian {guardian.guardian_id} for missing guardian {missing.guardian_id}"


def _parse(doc: Any, compensated: bool) -> DecryptionShare | CompensatedDecryptionShare:
    if not isinstance(doc, dict):
        raise TypeError("not a JSON object")
    return CompensatedDecryptionShare.from_json(doc) if compensated else DecryptionShare.from_json(doc)


def _one_object(
    share: DecryptionShare | CompensatedDecryptionShare,
    target: Target,
    where: str,
    guardian: GuardianRecord,
    missing: GuardianRecord | None,
    recovery_key: mpz | None,
    out: UnitShare,
) -> None:
    who = _who(guardian, missing)
    if share.object_id != target.object_id:
        out.problems.append(f"{who}: {where}: the share is of {share.object_id!r}, not {target.object_id!r}")
    if share.guardian_id != guardian.guardian_id:
        out.problems.append(f"{who}: {where}: the share names guardian {share.guardian_id!r}")
    if share.public_key != guardian.election_public_key:
        out.problems.append(f"{who}: {where}: the share's public_key is not the guardian's")
    if isinstance(share, CompensatedDecryptionShare):
        assert missing is not None
        if share.missing_guardian_id != missing.guardian_id:
            out.problems.append(
                f"{who}: {where}: the share names missing guardian {share.missing_guardian_id!r}"
            )
    expected = {c.object_id: c for c in target.contests}
    if extra := sorted(set(share.contests) - set(expected)):
        out.problems.append(f"{who}: {where}: contests not in the unit: {extra[:5]}")
    for contest in target.contests:
        got = share.contests.get(contest.object_id)
        if got is None:
            out.problems.append(f"{who}: {where}: no share for contest {contest.object_id}")
            continue
        if (
            got.guardian_id != guardian.guardian_id
            or got.description_hash != contest.description_hash
            or getattr(got, "missing_guardian_id", None) != (None if missing is None else missing.guardian_id)
        ):
            out.problems.append(
                f"{who}: {where}: contest {contest.object_id} names another guardian or description hash"
            )
        ids = [sid for sid, _ in contest.selections]
        if extra := sorted(set(got.selections) - set(ids)):
            out.problems.append(
                f"{who}: {where}: contest {contest.object_id}: selections not in the unit: {extra[:5]}"
            )
        for sid, ct in contest.selections:
            label = f"{who}: {where}: contest {contest.object_id} selection {sid}"
            sel = got.selections.get(sid)
            if sel is None:
                out.problems.append(f"{label}: no share")
                continue
            if sel.object_id != sid or sel.guardian_id != guardian.guardian_id:
                out.problems.append(f"{label}: names another selection or guardian")
                continue
            proof: ChaumPedersenProof | None
            if isinstance(sel, CiphertextCompensatedDecryptionSelection):
                assert missing is not None
                if sel.missing_guardian_id != missing.guardian_id or sel.recovery_key != recovery_key:
                    out.problems.append(f"{label}: wrong missing guardian or recovery key")
                    continue
                proof, key = sel.proof, sel.recovery_key
            else:
                proof = sel.proof
                if proof is None or sel.recovered_parts is not None:
                    out.problems.append(f"{label}: needs its own proof (and no recovered parts)")
                    continue
                key = guardian.election_public_key
            out.statements.append(ShareStatement(f"{label}: proof fails", ct, key, sel.share, proof))


def read_unit_share(
    doc: Any,
    targets: Sequence[Target],
    *,
    spoiled: bool,
    unit_label: str,
    guardian: GuardianRecord,
    missing: GuardianRecord | None = None,
) -> UnitShare:
    """The structural checks of one unit's uploaded document (see the module docstring).

    ``targets``: the unit's one slice (``spoiled=False``) or its spoiled ballots, in the unit's order;
    ``missing``: the missing guardian a compensated share is for (None: the guardian's own share).
    """
    out = UnitShare(None, [], [])
    who = _who(guardian, missing)
    compensated = missing is not None
    recovery = compute_recovery_public_key(guardian.sequence_order, missing) if missing is not None else None
    try:
        if not spoiled:
            if len(targets) != 1:
                raise ValueError("a slice has one target")
            share = _parse(doc, compensated)
            _one_object(share, targets[0], unit_label, guardian, missing, recovery, out)
            out.document = share.to_json()
        else:
            ballots = doc.get("spoiled_ballots") if isinstance(doc, dict) else None
            if not isinstance(ballots, dict) or set(doc) != {"spoiled_ballots"}:
                out.problems.append(
                    f'{who}: {unit_label}: expected {{"spoiled_ballots": {{ballot id: share}}}}'
                )
                return out
            wanted = [t.object_id for t in targets]
            if missing_ids := [b for b in wanted if b not in ballots]:
                out.problems.append(f"{who}: {unit_label}: no share of ballots {missing_ids[:5]}")
            if extra := sorted(set(ballots) - set(wanted)):
                out.problems.append(f"{who}: {unit_label}: ballots not in the unit: {extra[:5]}")
            normalised: dict[str, Any] = {}
            for t in targets:
                if t.object_id not in ballots:
                    continue
                share = _parse(ballots[t.object_id], compensated)
                _one_object(share, t, f"{unit_label} ballot {t.object_id}", guardian, missing, recovery, out)
                normalised[t.object_id] = share.to_json()
            out.document = {"spoiled_ballots": normalised}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        out.problems.append(
            f"{who}: {unit_label}: malformed share document ({type(exc).__name__}: {exc})"[:300]
        )
        out.document = None
    if out.problems:
        out.document = None
    out.problems = out.problems[:MAX_PROBLEMS]
    return out


def check_unit_share(
    doc: Any,
    targets: Sequence[Target],
    extended_base_hash: mpz,
    *,
    spoiled: bool,
    unit_label: str,
    guardian: GuardianRecord,
    missing: GuardianRecord | None = None,
) -> UnitShare:
    """``read_unit_share``, then every Chaum-Pedersen proof (batched; each failing one named)."""
    out = read_unit_share(
        doc, targets, spoiled=spoiled, unit_label=unit_label, guardian=guardian, missing=missing
    )
    if not out.problems:
        out.problems = verify_shares(out.statements, extended_base_hash)[:MAX_PROBLEMS]
        if out.problems:
            out.document = None
    return out


# ------------------------------------------------------------------------- making them (the guardian side)


def make_unit_document(
    private: PrivateGuardianRecord,
    missing: Sequence[GuardianRecord],
    kind: str,
    targets: Sequence[Target],
    context: ElectionContext,
    workers: int | None = 1,
) -> dict[str, Any]:
    """What a guardian uploads for one unit (``PUT .../shares/{unit_id}``): its own share of the unit's
    targets and one compensated share per missing guardian, from the backup that guardian sent it, each
    with its proofs; a slice's as the share JSON, a spoiled run's as ``{"spoiled_ballots": {id: share}}``."""

    def document(shares: Sequence[DecryptionShare | CompensatedDecryptionShare]) -> dict[str, Any]:
        if kind == "slice":
            (share,) = shares
            return share.to_json()
        return {"spoiled_ballots": {t.object_id: s.to_json() for t, s in zip(targets, shares, strict=True)}}

    own = compute_decryption_shares(private, targets, context, workers)
    compensated = {
        m.guardian_id: document(compute_compensated_decryption_shares(private, m, targets, context, workers))
        for m in missing
    }
    return {"share": document(own), "compensated": compensated}


_HELD: dict[str, Any] = {}


def hold_for_workers(private: dict[str, Any], missing: list[dict[str, Any]], context: dict[str, Any]) -> None:
    """A process pool's initializer: what each worker process needs for ``unit_document_in_worker``,
    parsed once (handed over the pool's pipe, never on a command line)."""
    _HELD["private"] = PrivateGuardianRecord.from_json(private)
    _HELD["missing"] = [GuardianRecord.from_json(m) for m in missing]
    _HELD["context"] = ElectionContext.from_json(context)


def unit_document_in_worker(kind: str, targets: list[dict[str, Any]]) -> dict[str, Any]:
    """``make_unit_document`` in a worker process set up by ``hold_for_workers``."""
    return make_unit_document(
        _HELD["private"],
        _HELD["missing"],
        kind,
        [Target.from_json(t) for t in targets],
        _HELD["context"],
    )
