"""Quiet by default: our own events at INFO, libraries' chatter (pika's connection workflow, Ray's
token-authentication warning, Ray's start-up notes) only with DEBUG."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from cli import logs

OURS = ("bridge.executor", logging.INFO)
CHATTER = (
    ("pika.adapters.utils.connection_workflow", logging.INFO),
    (logs.RAY_TOKEN_WARNING, logging.WARNING),
    ("ray", logging.INFO),
    ("uvicorn.access", logging.INFO),
)


@pytest.fixture(autouse=True)
def restore() -> Iterator[None]:
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    yield
    root.handlers[:] = saved[1]
    root.setLevel(saved[0])
    logs.configure(logging.WARNING)


def _emitted(name: str, level: int) -> bool:
    return logging.getLogger(name).isEnabledFor(level)


def test_info_keeps_our_events_and_drops_the_libraries() -> None:
    logs.configure(logs.level_of("INFO"))
    assert _emitted(*OURS)
    assert [name for name, level in CHATTER if _emitted(name, level)] == []
    assert _emitted("pika", logging.WARNING)  # a library's real trouble still shows


def test_debug_lets_everything_through() -> None:
    logs.configure(logs.level_of("INFO", debug=True))
    assert _emitted(*OURS) and all(_emitted(name, level) for name, level in CHATTER)


def test_a_bad_level_name_is_info() -> None:
    assert logs.level_of("loud") == logging.INFO and logs.level_of("warning") == logging.WARNING
