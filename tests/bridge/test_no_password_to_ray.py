"""No database password travels in a Ray task argument (docs/invariants.md, rule 8).

A real job runs through the executor as a PostgreSQL role of its own with a password, given in the URL's
userinfo or in its query; every ``run_chunk`` submission the executor makes is recorded and searched for
the password. The tests' PostgreSQL trusts 127.0.0.1, so the workers connect without it: what matters
here is what travels, not whether the password is right.
"""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

import bridge.chunk_run
from bridge.brokers.stub import StubBroker
from bridge.executor import Executor
from service.db.session import session_factory
from service.settings import Settings
from tests.bridge.fakes import BODY
from tests.bridge.helpers_bridge import job_row, make_tally_job, tasks_of

pytestmark = pytest.mark.services


class _Recorder:
    """Stands in for ``bridge.chunk_run.run_chunk``: records every submission's arguments, then submits."""

    def __init__(self, remote_function: Any) -> None:
        self.remote_function = remote_function
        self.submissions: list[tuple[dict[str, Any], tuple[Any, ...], dict[str, Any]]] = []

    def options(self, **options: Any) -> Any:
        recorder, inner = self, self.remote_function.options(**options)

        class _Submit:
            def remote(self, *args: Any, **kwargs: Any) -> Any:
                recorder.submissions.append((options, args, kwargs))
                return inner.remote(*args, **kwargs)

        return _Submit()

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        self.submissions.append(({}, args, kwargs))
        return self.remote_function.remote(*args, **kwargs)


@pytest.fixture()
def role(bridge_db: str) -> Iterator[tuple[str, str, str]]:
    """A login role with a password and rights on the session database's tables (dropped after):
    (name, password, a second password for ``sslpassword``)."""
    name = f"amarvote_pw_{uuid.uuid4().hex[:8]}"
    password, ssl_password = f"pw-{uuid.uuid4().hex}", f"sslpw-{uuid.uuid4().hex}"
    admin = create_engine(bridge_db, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'"))
        c.execute(text(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {name}"))
        c.execute(text(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {name}"))
    try:
        yield name, password, ssl_password
    finally:
        with admin.connect() as c:
            c.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :n"), {"n": name}
            )
            c.execute(text(f"DROP OWNED BY {name}"))
            c.execute(text(f"DROP ROLE {name}"))
        admin.dispose()


def _urls(bridge_db: str, name: str, password: str, ssl_password: str) -> list[str]:
    base = make_url(bridge_db).set(username=name)
    in_userinfo = base.set(password=password).render_as_string(hide_password=False)
    in_query = base.update_query_dict({"password": password, "sslpassword": ssl_password})
    return [in_userinfo, in_query.render_as_string(hide_password=False)]


@pytest.mark.parametrize("where", ["userinfo", "query"])
def test_no_password_in_any_run_chunk_argument(  # type: ignore[no-untyped-def]
    where, settings, factory, bridge_db, role, ray_local, clean, monkeypatch
) -> None:
    name, password, ssl_password = role
    url = dict(zip(("userinfo", "query"), _urls(bridge_db, name, password, ssl_password), strict=True))[where]
    _, job_id = make_tally_job(factory, ballots=12, chunk_size=3)
    recorder = _Recorder(bridge.chunk_run.run_chunk)
    monkeypatch.setattr(bridge.chunk_run, "run_chunk", recorder)
    as_role: Settings = settings.model_copy(update={"database_url": url})
    broker = StubBroker()
    for task in tasks_of(factory, job_id):
        broker.publish(task.id, "TALLY", job_id)
    try:
        Executor(
            session_factory(url),
            broker,
            as_role,
            bodies={"TALLY": BODY},
            poll_interval=0.05,
            shutdown_grace=5,
        ).run_until_idle(timeout=120)
    finally:
        session_factory(url).kw["bind"].dispose()

    job = job_row(factory, job_id)
    assert (job.status, job.processed_chunks) == ("COMPLETED", 4), "the job ran as the role, through Ray"
    assert len(recorder.submissions) == 4
    for options, args, kwargs in recorder.submissions:
        everything = (options, args, kwargs)
        for secret in (password, ssl_password):
            assert secret not in repr(everything)
            assert secret.encode() not in pickle.dumps(everything)
        (database_url,) = [a for a in args if isinstance(a, str) and a.startswith("postgresql")]
        assert make_url(database_url).username == name, "the URL still names the role and the database"
        assert make_url(database_url).database == make_url(bridge_db).database
