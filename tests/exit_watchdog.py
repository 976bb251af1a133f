"""A pytest plugin: the run ends even when a test left a thread blocked.

A thread blocked for ever (in a database call, say) keeps the interpreter from exiting, and CI with
it, long after the summary is printed: Python joins every ``concurrent.futures`` thread, and every
non-daemon thread, at exit. Past ``AMARVOTE_TEST_EXIT_WATCHDOG`` seconds (120) after the run, print
every thread's stack and exit non-zero instead.
"""

from __future__ import annotations

import faulthandler
import os
import sys

import pytest


@pytest.hookimpl(trylast=True)  # after pytest's own faulthandler plugin has let go
def pytest_unconfigure(config: pytest.Config) -> None:
    seconds = float(os.environ.get("AMARVOTE_TEST_EXIT_WATCHDOG", "120"))
    faulthandler.dump_traceback_later(seconds, exit=True, file=sys.__stderr__)
