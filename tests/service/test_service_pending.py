"""The pending-ballot store on its own: time-to-live, bound, one decision per ballot, no nonce in a repr."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from service.elections import crypto
from service.elections.crypto import Encryption
from service.elections.pending import PendingBallots
from service.errors import Conflict, TooManyRequests


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def election() -> tuple[dict[str, Any], dict[str, Any]]:
    manifest, manifest_hash = crypto.simple_manifest(["Yes", "No"], None, 1, "store")
    _privates, _records, context = crypto.key_ceremony(1, 1, manifest_hash, ["g1"])
    return manifest, context


def _encryption(election: tuple[dict[str, Any], dict[str, Any]], bid: str) -> Encryption:
    manifest, context = election
    plaintext = {
        "object_id": bid,
        "style_id": "ballot-style-1",
        "contests": [{"object_id": "contest-1", "ballot_selections": [{"object_id": "Yes", "vote": 1}]}],
    }
    return crypto.encrypt_plaintext(plaintext, manifest, context, 1)


def test_hold_take_once(election) -> None:  # type: ignore[no-untyped-def]
    store = PendingBallots(60, 10, Clock())
    enc = _encryption(election, "a")
    entry = store.hold(7, enc)
    assert len(store) == 1
    back = entry.encryption()  # the compact form gives back the same ballot and opening
    assert (back.ballot, back.nonce, back.plaintext) == (enc.ballot, enc.nonce, enc.plaintext)
    assert store.take(8, "a") is None  # another election's ballot "a" is another ballot
    assert store.take(7, "a") is entry
    assert store.take(7, "a") is None and len(store) == 0


def test_expiry_and_the_bound_count_live_entries_only(election) -> None:  # type: ignore[no-untyped-def]
    clock = Clock()
    store = PendingBallots(10, 2, clock)
    encs = [_encryption(election, f"b{i}") for i in range(3)]
    store.hold(1, encs[0])
    clock.now += 5
    store.hold(1, encs[1])
    with pytest.raises(TooManyRequests, match="2 ballots are pending"):
        store.hold(1, encs[2])
    clock.now += 5  # the first one's time is up; the second has 5 s left
    assert store.take(1, "b0") is None
    assert len(store) == 1
    store.hold(1, encs[2])
    clock.now += 4.9
    assert store.take(1, "b1") is not None
    clock.now += 0.2
    store.purge()
    assert len(store) == 1  # b2, held 5.1 s ago
    clock.now += 5
    store.purge()
    assert len(store) == 0


def test_one_ballot_id_pending_once(election) -> None:  # type: ignore[no-untyped-def]
    store = PendingBallots(60, 10, Clock())
    store.hold(1, _encryption(election, "c"))
    with pytest.raises(Conflict, match="already pending"):
        store.hold(1, _encryption(election, "c"))
    store.hold(2, _encryption(election, "c"))
    assert len(store) == 2
    store.clear()
    assert len(store) == 0


def test_concurrent_decisions_get_the_ballot_once(election) -> None:  # type: ignore[no-untyped-def]
    store = PendingBallots(60, 10)
    store.hold(1, _encryption(election, "d"))
    got: list[object] = []
    start = threading.Barrier(8)

    def decide() -> None:
        start.wait()
        got.append(store.take(1, "d"))

    threads = [threading.Thread(target=decide) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(g is not None for g in got) == 1


def test_no_nonce_or_plaintext_in_a_repr(election) -> None:  # type: ignore[no-untyped-def]
    store = PendingBallots(60, 10)
    enc = _encryption(election, "e")
    entry = store.hold(1, enc)
    assert len(enc.nonce) >= 2
    forms = (enc.nonce, enc.nonce.lower(), str(int(enc.nonce, 16)))
    for text in (repr(enc), repr(entry), str(entry)):
        assert not any(f in text for f in forms) and "'vote'" not in text


def test_bad_limits_refused() -> None:
    with pytest.raises(ValueError):
        PendingBallots(0, 10)
    with pytest.raises(ValueError):
        PendingBallots(10, 0)
