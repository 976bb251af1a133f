#!/usr/bin/env bash
# The test command: starts PostgreSQL and RabbitMQ when they are not running (and installs the system
# packages the build and the tests need), installs the project into .venv, then runs the whole suite (extra
# arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ is needed ($PY)"; exit 1; }
# services.sh first: it installs libgmp-dev, which `pip install -e .` needs to build compute/_multiexp.c.
bash scripts/services.sh

if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'

.venv/bin/ruff check .
.venv/bin/ruff format --check .
# The layers point down (cli -> bridge -> service -> compute) and only the RabbitMQ broker imports pika.
.venv/bin/lint-imports
.venv/bin/mypy
# Ray workers must import the project: the editable install gives them the same paths.
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 "$@"
