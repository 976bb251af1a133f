"""The database URL a Ray task argument carries: no password, from the userinfo or the query; the worker
connects with its own setting's password when that names the same database."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from service.db.session import with_own_password, without_password


@pytest.mark.parametrize(
    ("url", "stripped"),
    [
        ("postgresql://amar:S3CRET@db.example:5433/votes", "postgresql+psycopg://amar@db.example:5433/votes"),
        (
            "postgresql+psycopg://amar@db.example/votes?password=S3CRET&sslmode=require&sslpassword=S3CRET",
            "postgresql+psycopg://amar@db.example/votes?sslmode=require",
        ),
        (
            "postgresql://amar:S3CRET@db.example/votes?PASSWORD=S3CRET",
            "postgresql+psycopg://amar@db.example/votes",
        ),
        ("sqlite:////var/lib/amarvote/amarvote.sqlite3", "sqlite:////var/lib/amarvote/amarvote.sqlite3"),
    ],
)
def test_without_password_keeps_everything_but_the_password(url: str, stripped: str) -> None:
    out = without_password(url)
    assert "S3CRET" not in out
    assert out == stripped
    assert make_url(out).password is None


def test_the_worker_puts_back_its_own_password_for_the_same_database_only() -> None:
    sent = without_password("postgresql://amar:S3CRET@db.example/votes")
    own = "postgresql://amar:NODE@db.example/votes"
    assert with_own_password(sent, own) == "postgresql+psycopg://amar:NODE@db.example/votes"
    assert with_own_password(sent, own + "?password=NODE") == normalize(own + "?password=NODE")
    other = "postgresql://amar:NODE@db.example/elsewhere"
    assert with_own_password(sent, other) == sent
    assert with_own_password(sent, None) == sent


def normalize(url: str) -> str:
    return make_url(url).set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
