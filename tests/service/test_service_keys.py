"""Two secrets: the server secret (every Ray node holds it) never signs tokens; the JWT secret is the API's
own, required with a database URL, generated on the embedded default; both at least 32 bytes."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from service.api.app import create_app
from service.security.auth import ISSUER, Role, decode_token, issue_token
from service.security.sealing import derive_subkey
from service.security.secrets import (
    JWT_SECRET_FILE,
    SECRET_FILE,
    ConfigError,
    jwt_key,
    server_secret,
)
from service.settings import Settings
from tests.conftest import TEST_JWT_SECRET, TEST_SERVER_SECRET

pytestmark = pytest.mark.services

FAST_KDF = {"kdf_time_cost": 1, "kdf_memory_kib": 1024, "kdf_parallelism": 1}


@pytest.fixture(scope="module")
def api_settings(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        database_url=db_url,
        data_dir=tmp_path_factory.mktemp("keys"),
        server_secret=TEST_SERVER_SECRET,
        jwt_secret=TEST_JWT_SECRET,
        auto_migrate=False,
        **FAST_KDF,
    )


def _admin_claims() -> dict[str, object]:
    now = int(time.time())
    return {"iss": ISSUER, "sub": "mallory", "role": "admin", "iat": now, "exp": now + 600}


def test_a_worker_node_cannot_sign_a_token_the_api_accepts(api_settings: Settings) -> None:
    # What a Ray node or bridge holds: the database URL and the server secret, no JWT secret.
    worker = api_settings.model_copy(update={"jwt_secret": None})
    with pytest.raises(ConfigError, match="AMARVOTE_JWT_SECRET"):
        issue_token(worker, "mallory", Role.ADMIN)
    with pytest.raises(ConfigError, match="AMARVOTE_JWT_SECRET"):
        jwt_key(worker)

    secret = TEST_SERVER_SECRET.encode()
    # The key the API used to derive from the server secret, and the server secret itself.
    forged = [
        jwt.encode(_admin_claims(), derive_subkey(secret, "jwt"), algorithm="HS256"),
        jwt.encode(_admin_claims(), secret, algorithm="HS256"),
    ]
    with TestClient(create_app(api_settings)) as client:
        genuine = issue_token(api_settings, "admin", Role.ADMIN)
        assert client.get("/api/elections", headers={"Authorization": f"Bearer {genuine}"}).status_code == 200
        for token in forged:
            r = client.get("/api/elections", headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 401, r.text
            assert "Signature verification failed" in r.json()["detail"]


def test_the_api_refuses_to_start_on_postgresql_without_a_jwt_secret(api_settings: Settings) -> None:
    with pytest.raises(ConfigError, match="AMARVOTE_JWT_SECRET is not set"):
        create_app(api_settings.model_copy(update={"jwt_secret": None}))


@pytest.mark.parametrize(
    ("field", "variable"),
    [("server_secret", "AMARVOTE_SERVER_SECRET"), ("jwt_secret", "AMARVOTE_JWT_SECRET")],
)
def test_secrets_under_32_bytes_are_refused(api_settings: Settings, field: str, variable: str) -> None:
    short = api_settings.model_copy(update={field: SecretStr("x" * 31)})
    with pytest.raises(ConfigError, match=f"{variable} must have at least 32 bytes") as e:
        create_app(short)
    assert "x" * 31 not in str(e.value), "an error never quotes a secret"
    # Bytes, not characters: 16 two-byte characters are enough, 15 are not.
    enough = api_settings.model_copy(update={field: SecretStr("é" * 16)})
    create_app(enough).state.ctx.engine.dispose()
    fewer = api_settings.model_copy(update={field: SecretStr("é" * 15 + "x")})
    with pytest.raises(ConfigError, match=variable):
        create_app(fewer)


def test_short_secrets_are_refused_on_the_embedded_default_too(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="AMARVOTE_SERVER_SECRET"):
        server_secret(Settings(data_dir=tmp_path, server_secret="y" * 31))
    with pytest.raises(ConfigError, match="AMARVOTE_JWT_SECRET"):
        create_app(Settings(data_dir=tmp_path, jwt_secret="y" * 31, **FAST_KDF))
    assert not (tmp_path / "amarvote.sqlite3").exists(), "refused before the database is touched"


def test_one_value_for_both_secrets_is_refused(api_settings: Settings) -> None:
    same = api_settings.model_copy(update={"jwt_secret": api_settings.server_secret})
    with pytest.raises(ConfigError, match="must differ"):
        create_app(same)


def test_the_embedded_default_generates_its_own_jwt_secret(tmp_path: Path) -> None:
    embedded = Settings(data_dir=tmp_path, **FAST_KDF)
    with TestClient(create_app(embedded)) as client:
        server_file, jwt_file = tmp_path / SECRET_FILE, tmp_path / JWT_SECRET_FILE
        for f in (server_file, jwt_file):
            assert f.exists() and f.stat().st_mode & 0o077 == 0, f
            assert len(f.read_text().strip()) >= 32
        assert server_file.read_text() != jwt_file.read_text()
        assert jwt_key(embedded) == jwt_file.read_text().strip().encode()
        forged = jwt.encode(_admin_claims(), derive_subkey(server_secret(embedded), "jwt"), algorithm="HS256")
        assert client.get("/api/elections", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
        # `amarvote token` on this data directory signs with the same key the API checks.
        token = issue_token(Settings(data_dir=tmp_path), "alice", Role.ADMIN)
        assert client.get("/api/elections", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    # A restarted API keeps its key: tokens issued before still verify.
    with TestClient(create_app(embedded)) as client:
        assert client.get("/api/elections", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert decode_token(embedded, token).subject == "alice"
