"""Schema migrations (Alembic), callable from the CLI and tests without an alembic.ini on disk."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

from service.db.session import make_engine, normalize_url

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    cfg = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        # ConfigParser interpolation would eat a '%' in a password.
        cfg.set_main_option("sqlalchemy.url", normalize_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str | None = None, revision: str = "head", *, engine: Engine | None = None) -> None:
    """Bring the database at ``url`` (Settings' database when None) up to ``revision``."""
    cfg = alembic_config(url)
    own = engine is None and url is not None
    eng = engine or (make_engine(url) if url else None)
    if eng is None:
        command.upgrade(cfg, revision)
        return
    try:
        with eng.begin() as connection:
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, revision)
    finally:
        if own:
            eng.dispose()


def downgrade(url: str | None, revision: str) -> None:
    cfg = alembic_config(url)
    command.downgrade(cfg, revision)


def current_revision(url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext

    eng = make_engine(url)
    try:
        with eng.connect() as c:
            return MigrationContext.configure(c).get_current_revision()
    finally:
        eng.dispose()
