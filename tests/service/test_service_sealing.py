"""Sealing: credential files (argon2id + AES-GCM) and the server-secret escrow blobs."""

from __future__ import annotations

import copy
import json

import pytest

from service.security.sealing import (
    KdfParams,
    SealError,
    credential_owner,
    open_with_passphrase,
    open_with_secret,
    seal_with_passphrase,
    seal_with_secret,
)

FAST = KdfParams(time_cost=1, memory_cost=1024, parallelism=1)
OWNER = {"election_id": 7, "guardian_id": "g1"}


def test_passphrase_round_trip_and_file_shape() -> None:
    sealed = seal_with_passphrase(b"private record", "a good passphrase", owner=OWNER, params=FAST)
    assert set(sealed) == {"format", "owner", "kdf", "salt", "cipher", "nonce", "ciphertext"}
    assert sealed["kdf"] == {
        "name": "argon2id",
        "version": 19,
        "hash_len": 32,
        "time_cost": 1,
        "memory_cost": 1024,
        "parallelism": 1,
    }
    text = json.dumps(sealed)
    assert "private record" not in text and "a good passphrase" not in text
    assert credential_owner(sealed) == OWNER
    assert open_with_passphrase(json.loads(text), "a good passphrase") == b"private record"
    # Fresh salt and nonce every time.
    again = seal_with_passphrase(b"private record", "a good passphrase", owner=OWNER, params=FAST)
    assert again["salt"] != sealed["salt"] and again["ciphertext"] != sealed["ciphertext"]


def test_default_kdf_is_argon2id_64mib() -> None:
    assert KdfParams() == KdfParams(time_cost=3, memory_cost=65536, parallelism=2)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(ciphertext=d["ciphertext"][:-4] + "AAA="),
        lambda d: d["owner"].update(guardian_id="g2"),  # header is associated data
        lambda d: d["kdf"].update(time_cost=2),
        lambda d: d.update(nonce="AAAAAAAAAAAAAAAA"),
    ],
)
def test_tampering_is_detected(mutate) -> None:  # type: ignore[no-untyped-def]
    sealed = seal_with_passphrase(b"x", "a good passphrase", owner=OWNER, params=FAST)
    bad = copy.deepcopy(sealed)
    mutate(bad)
    with pytest.raises(SealError):
        open_with_passphrase(bad, "a good passphrase")


def test_wrong_passphrase_says_nothing_more() -> None:
    sealed = seal_with_passphrase(b"x", "a good passphrase", owner=OWNER, params=FAST)
    with pytest.raises(SealError) as e:
        open_with_passphrase(sealed, "a bad passphrase")
    assert str(e.value) == "wrong passphrase or damaged credential file"


def test_hostile_kdf_parameters_are_refused_before_work() -> None:
    sealed = seal_with_passphrase(b"x", "a good passphrase", owner=OWNER, params=FAST)
    sealed["kdf"]["memory_cost"] = 1 << 24  # 16 GiB
    with pytest.raises(SealError, match="unacceptable"):
        open_with_passphrase(sealed, "a good passphrase")


def test_short_passphrase_and_foreign_files() -> None:
    with pytest.raises(ValueError, match="at least 8"):
        seal_with_passphrase(b"x", "short", owner=OWNER, params=FAST)
    for junk in ({}, {"format": "other"}, [], "text"):
        with pytest.raises(SealError):
            open_with_passphrase(junk, "a good passphrase")


def test_server_secret_blobs_bind_purpose_and_context() -> None:
    secret = b"s" * 32
    blob = seal_with_secret(b"key material", secret, purpose="escrow", context="escrow:1:g1")
    assert b"key material" not in blob
    assert open_with_secret(blob, secret, purpose="escrow", context="escrow:1:g1") == b"key material"
    for kw in (
        {"purpose": "escrow", "context": "escrow:1:g2"},
        {"purpose": "other", "context": "escrow:1:g1"},
    ):
        with pytest.raises(SealError):
            open_with_secret(blob, secret, **kw)
    with pytest.raises(SealError):
        open_with_secret(blob, b"t" * 32, purpose="escrow", context="escrow:1:g1")
    with pytest.raises(SealError):
        open_with_secret(blob[:-1] + bytes([blob[-1] ^ 1]), secret, purpose="escrow", context="escrow:1:g1")


def test_the_server_never_seals_a_file_it_would_refuse_to_open() -> None:
    for params in (KdfParams(7, 1024, 1), KdfParams(1, (256 << 10) + 1, 1), KdfParams(1, 1024, 5)):
        with pytest.raises(SealError, match="at most time_cost 6"):
            seal_with_passphrase(b"x", "a good passphrase", owner=OWNER, params=params)
