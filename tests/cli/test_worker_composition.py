"""The housekeeping a worker process runs: three loops with one job each, composed in ``cli/worker.py``.

The reconciler, the callback sender and the escrow sweeper were one loop; now each is its own, so the
composition alone decides that a process runs all three. No services: a SQLite factory that is never
queried, and loops whose rounds are counted.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

from bridge.callback_sender import CallbackSender
from bridge.escrow_sweeper import EscrowSweeper
from bridge.loop import Loop
from bridge.reconciler import Reconciler
from cli.worker import Together, make_housekeeping
from service.db.session import session_factory
from service.jobs.clock import backoff
from service.jobs.transitions import Policy
from service.settings import Settings

SECRET = "callback-test-secret-0123456789abcdef"


def _settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'db.sqlite'}", **values)  # type: ignore[arg-type]


def test_housekeeping_is_the_reconciler_and_the_escrow_sweeper(tmp_path: Path) -> None:
    settings = _settings(tmp_path, escrow_retention_hours=5, stuck_after_seconds=7)
    services = make_housekeeping(settings, session_factory(settings.sqlalchemy_url), interval=3.0)
    assert [type(s) for s in services] == [Reconciler, EscrowSweeper]  # no callback secret: no sender
    reconciler, sweeper = services
    assert isinstance(reconciler, Reconciler) and isinstance(sweeper, EscrowSweeper)
    assert reconciler.interval == sweeper.interval == 3.0
    assert reconciler.stuck_after == timedelta(seconds=7)
    assert sweeper.retention == timedelta(hours=5)


def test_a_callback_secret_adds_the_callback_sender(tmp_path: Path) -> None:
    settings = _settings(tmp_path, callback_secret=SECRET, callback_allowed_urls="http://127.0.0.1:9/hooks")
    services = make_housekeeping(settings, session_factory(settings.sqlalchemy_url))
    assert [type(s) for s in services] == [Reconciler, EscrowSweeper, CallbackSender]
    sender = services[2]
    assert isinstance(sender, CallbackSender)
    assert sender.config.secret == SECRET.encode()
    assert sender.config.allowed_urls == ["http://127.0.0.1:9/hooks"]


class _Counting(Loop):
    """A round that raises every other time: the loop must go on."""

    def __init__(self) -> None:
        super().__init__(0.01)
        self.rounds = 0

    def run_once(self) -> int:
        self.rounds += 1
        if self.rounds % 2:
            raise RuntimeError("a round that fails")
        return 1


def test_together_runs_each_loop_until_stopped_and_a_failed_round_does_not_end_one() -> None:
    loops = [_Counting(), _Counting()]
    together = Together(list(loops))
    thread = threading.Thread(target=together.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while min(loop.rounds for loop in loops) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    together.stop()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert all(loop.rounds >= 4 for loop in loops)  # past failed rounds
    stopped = [loop.rounds for loop in loops]
    time.sleep(0.1)
    assert [loop.rounds for loop in loops] == stopped  # stopped with the group


def test_one_backoff_for_task_retries_and_callbacks() -> None:
    assert [backoff(2.0, n).total_seconds() for n in (0, 1, 2, 3, 4)] == [2, 2, 4, 8, 16]
    assert backoff(5.0, 40) == timedelta(hours=1)  # capped
    policy = Policy(backoff_seconds=3.0)
    assert [policy.backoff(n) for n in range(1, 8)] == [backoff(3.0, n) for n in range(1, 8)]
