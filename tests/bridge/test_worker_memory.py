"""``bridge.worker_memory``: a worker's imports frozen out of the per-task collection, never a failing
task's frames (its traceback still holds them, and with them its chunk)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from bridge import worker_memory


@pytest.fixture
def unfrozen(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    gc.unfreeze()
    monkeypatch.setattr(worker_memory, "_frozen", False)
    yield
    gc.unfreeze()  # this process is the test run's, not a worker


def test_the_first_task_that_ends_cleanly_freezes_what_survives(unfrozen: None) -> None:
    worker_memory.release_freed_memory()
    assert worker_memory._frozen
    frozen = gc.get_freeze_count()
    assert frozen > 10_000  # the imports
    worker_memory.release_freed_memory()
    assert gc.get_freeze_count() == frozen, "frozen once, not after every task"


def test_a_failing_task_is_never_frozen(unfrozen: None) -> None:
    chunk = [object() for _ in range(100)]
    with pytest.raises(ValueError):
        try:
            raise ValueError("the body failed")
        finally:
            worker_memory.release_freed_memory()  # as run_chunk's finally, the exception in flight
    assert not worker_memory._frozen and gc.get_freeze_count() == 0
    del chunk
    worker_memory.release_freed_memory()
    assert worker_memory._frozen
