#!/usr/bin/env bash
# The test command: starts PostgreSQL and RabbitMQ when they are not running (and installs the system
# packages the build and the tests need), installs the project into .venv, then runs the whole suite in
# layers (README.md, "Tests"): the fast layer (and, beside it, the test that must not share the machine's
# RabbitMQ), then the slow layer on AMARVOTE_TEST_WORKERS (4) pytest-xdist workers. With arguments, one
# pytest run of exactly those instead.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ is needed ($PY)"; exit 1; }
# services.sh first: it installs libgmp-dev, which `pip install -e .` needs to build compute/_multiexp.c.
bash scripts/services.sh

if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
# Bytecode once, here, before the suite's many processes (pytest's, the `amarvote` subprocesses', Ray
# workers') start: none compiles the project's modules again. And bytecode kept: with PYTHONDONTWRITEBYTECODE
# set (as on some machines) pytest would rewrite the asserts of every test module and plugin afresh in each
# of its processes (about 4 s of CPU each), where it can keep them in __pycache__ like any bytecode.
unset PYTHONDONTWRITEBYTECODE
.venv/bin/python -m compileall -q cli bridge service compute tests >/dev/null

.venv/bin/ruff check .
.venv/bin/ruff format --check .
# The layers point down (cli -> bridge -> service -> compute) and only the RabbitMQ broker imports pika.
.venv/bin/lint-imports
.venv/bin/mypy
# Ray workers must import the project: the editable install gives them the same paths.
PYTEST=(.venv/bin/python -m pytest -q -p no:cacheprovider)
if [ $# -gt 0 ]; then exec "${PYTEST[@]}" --durations=15 "$@"; fi
# The one test that stops the machine's RabbitMQ (``exclusive``) runs beside the fast layer, which never
# touches RabbitMQ, and ends before the slow layer starts; its report follows the fast layer's.
alone=$(mktemp)
# Only the files that mark one: collecting the whole suite to deselect the rest cost seconds on its path.
mapfile -t exclusive_files < <(grep -rl --include='test_*.py' 'pytest.mark.exclusive' tests)
"${PYTEST[@]}" --durations=5 -m exclusive "${exclusive_files[@]}" >"$alone" 2>&1 &
alone_pid=$!
# Pure code, under a minute: a slip shows before the services start. On two workers: one process is
# CPU-bound on one core, and the test beside it mostly waits for RabbitMQ.
fast=0
"${PYTEST[@]}" --durations=10 -m "not services" -n 2 || fast=$?
exclusive=0
wait "$alone_pid" || exclusive=$?
cat "$alone"
rm -f "$alone"
if [ "$fast" -ne 0 ] || [ "$exclusive" -ne 0 ]; then exit 1; fi
# Partly waiting (on Ray, the database, subprocesses, a fault's time-out), so more workers than cores pay:
# four took 330 s where three took 341 on this 2-core machine. Each worker has its own database and vhost,
# and they share one Ray (tests/conftest.py); a file's tests stay on one worker with their fixtures, and
# the longest files go first (tests/conftest.py orders them).
exec "${PYTEST[@]}" --durations=15 -m "services and not exclusive" \
    -n "${AMARVOTE_TEST_WORKERS:-4}" --dist loadfile --no-loadscope-reorder
