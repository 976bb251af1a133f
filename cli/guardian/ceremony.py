"""The guardian's side of a guardian-held key ceremony, against the API: every step that is due, each
made with ``compute/ceremony.py`` on this machine; idempotent (what is done is not done again) and
resumable (the service's ``due`` says what is left)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from cli.guardian.api import Api, ApiError, GuardianError
from cli.guardian.folder import Folder
from compute.ceremony import (
    backups_for,
    check_published_context,
    make_confirmation,
    verify_received_backups,
)
from compute.context import ElectionContext
from compute.group import from_hex
from compute.guardian import ElectionPartialKeyBackup, ElectionPublicKey, PrivateGuardianRecord


class SlotTaken(GuardianError):
    pass


def slot_taken(guardian_id: str, election_id: int) -> SlotTaken:
    return SlotTaken(
        f"GUARDIAN {guardian_id!r}'S SLOT IN ELECTION {election_id} HOLDS A KEY THAT IS NOT ITS OWN: someone"
        " else posted a key with this guardian's token. Do not continue: tell the election's administrator"
        " (the token is in other hands, the ceremony must not complete with that key)."
    )


def check_slot(keys: list[dict[str, Any]], own: ElectionPublicKey, election_id: int) -> None:
    """The slot's published key, if any, must be this guardian's own."""
    for k in keys:
        if k.get("owner_id") == own.owner_id and k != own.to_json():
            raise slot_taken(own.owner_id, election_id)


class Ceremony:
    def __init__(
        self,
        api: Api,
        folder: Folder,
        record: PrivateGuardianRecord,
        passphrase: str,
        say: Callable[[str], None],
    ) -> None:
        self.api, self.folder, self.record, self.passphrase, self.say = api, folder, record, passphrase, say
        self.base = f"/api/elections/{folder.election_id}"
        self.mine = f"{self.base}/ceremony/guardians/{folder.guardian_id}"
        self.own = record.election_keys.share()

    def status(self) -> dict[str, Any]:
        st: dict[str, Any] = self.api.get(f"{self.base}/ceremony")
        if st.get("due") is None:
            raise GuardianError("the token in this folder is not a guardian's own token")
        return st

    def keys(self) -> list[dict[str, Any]]:
        keys: list[dict[str, Any]] = self.api.get(f"{self.base}/ceremony/keys")
        check_slot(keys, self.own, self.folder.election_id)
        return keys

    def _post(self, what: str, path: str, body: Any) -> dict[str, Any]:
        try:
            out: dict[str, Any] = self.api.call("POST", f"{self.mine}/{path}", json=body)
        except ApiError as exc:
            if exc.status == 409 and "already holds another key" in exc.detail:
                raise slot_taken(self.folder.guardian_id, self.folder.election_id) from None
            raise
        self.say(f"posted {what}")
        return out

    def _keep_backups(self, keys: list[dict[str, Any]], to_verify: list[str]) -> list[dict[str, Any]]:
        """The backups addressed to this guardian: verified here, the good ones kept in the sealed
        record (its compensated shares need them), the verifications of ``to_verify`` returned."""
        public = [ElectionPublicKey.from_json(k) for k in keys]
        got = [ElectionPartialKeyBackup.from_json(b) for b in self.api.get(f"{self.mine}/backups")]
        verifications = verify_received_backups(self.record.election_keys, got, public)
        held = self.record.guardian_election_partial_key_backups
        changed = False
        for b, v in zip(got, verifications, strict=True):
            if v.verified and b.owner_id not in held:
                held[b.owner_id] = b
                self.record.guardian_election_partial_key_verifications[b.owner_id] = v
                changed = True
        if {k.owner_id for k in public} != set(self.record.guardian_election_public_keys):
            self.record.guardian_election_public_keys = {k.owner_id: k for k in public}
            changed = True
        if changed:
            self.folder.seal(self.record, self.passphrase)
        if bad := [v.owner_id for v in verifications if not v.verified]:
            self.say(
                f"[red]backup(s) from {', '.join(bad)} do not verify: reported, the ceremony fails[/red]"
            )
        return [v.to_json() for v in verifications if v.owner_id in to_verify]

    def step(self) -> dict[str, Any]:
        """Every step due now; the status after them."""
        st = self.status()
        if st["state"] == "failed":
            raise GuardianError(f"election {self.folder.election_id}'s key ceremony failed: {st['failure']}")
        keys = self.keys()
        actions = st["due"]["actions"]
        if "post_key" in actions:
            st = self._post("the public key", "key", self.own.to_json())
            keys = self.keys()
        if "post_backups" in actions or "post_backups" in st["due"]["actions"]:
            public = [ElectionPublicKey.from_json(k) for k in keys]
            backups = backups_for(self.record.election_keys, public)
            st = self._post(f"{len(backups)} backups", "backups", {"backups": [b.to_json() for b in backups]})
        if st["due"]["actions"] and "post_verifications" in st["due"]["actions"]:
            verifications = self._keep_backups(keys, st["due"]["backups_to_verify"])
            if verifications:
                st = self._post(
                    f"{len(verifications)} verifications", "verifications", {"verifications": verifications}
                )
        if st["state"] == "failed":
            raise GuardianError(f"election {self.folder.election_id}'s key ceremony failed: {st['failure']}")
        if st["state"] in ("confirm", "complete"):
            n = int(st["number_of_guardians"])
            held = self.record.guardian_election_partial_key_backups
            if len(held) < n - 1:
                self._keep_backups(keys, [])
            if len(held) < n - 1:
                raise GuardianError(
                    f"guardian {self.folder.guardian_id!r} holds {len(held)} verified backups of {n - 1}:"
                    " cannot go on"
                )
        if "confirm" in st["due"]["actions"]:
            context = ElectionContext.from_json(st["context"])
            public = [ElectionPublicKey.from_json(k) for k in keys]
            if problems := check_published_context(self.own, public, context, from_hex(st["manifest_hash"])):
                raise GuardianError(
                    "the published context is not what the published keys make; not confirming: "
                    + "; ".join(problems)
                )
            st = self._post(
                "the confirmation",
                "confirmation",
                make_confirmation(self.record.election_keys, context).to_json(),
            )
        return st


def waiting_for(st: dict[str, Any]) -> str:
    state = st["state"]
    if state == "keys":
        who = [g["guardian_id"] for g in st["guardians"] if g["key_posted_at"] is None]
        return f"keys from {', '.join(who)}"
    if state == "backups":
        due = st["due"] or {}
        awaited = due.get("backups_awaited_from") or []
        who = [g["guardian_id"] for g in st["guardians"] if g["verifications_posted_at"] is None]
        parts = []
        if awaited:
            parts.append(f"backups from {', '.join(awaited)}")
        if who:
            parts.append(f"verifications by {', '.join(who)}")
        return "; ".join(parts) or "the backups round"
    if state == "confirm":
        who = [g["guardian_id"] for g in st["guardians"] if g["confirmed_at"] is None]
        return f"confirmations by {', '.join(who)}"
    return state


def run(
    ceremony: Ceremony,
    *,
    wait: bool,
    interval: float,
    timeout: float | None,
) -> dict[str, Any]:
    start = time.monotonic()
    last = ""
    while True:
        st = ceremony.step()
        if st["state"] == "complete":
            return st
        note = f"round {st['state']!r}: waiting for {waiting_for(st)}"
        if note != last:
            ceremony.say(note)
            last = note
        if not wait:
            return st
        if timeout is not None and time.monotonic() - start > timeout:
            raise GuardianError(f"the ceremony is not complete after {timeout:.0f} s: {note}")
        time.sleep(interval)
