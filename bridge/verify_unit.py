"""The Ray task of ``record verify`` on the cluster (``bridge.verify``): one unit of a record checked.

A module of its own so that a worker running it imports Ray and ``compute`` only: Ray loads a task's
module by name, and ``bridge.verify`` (the driver's side) brings the job tables' policy and the settings,
SQLAlchemy and pydantic among them (about 0.4 s of CPU for every worker a verification starts).
"""

from __future__ import annotations

from typing import Any

import ray

from bridge.worker_memory import release_freed_memory
from compute.verify import Unit

# One RecordCheck per worker process, for the record being verified (by its header's digest).
_checks: dict[str, Any] = {}


def check_for(key: str, header: dict[str, Any]) -> Any:
    from compute.record import header_from_files
    from compute.verify import RecordCheck

    if key not in _checks:
        _checks.clear()
        _checks[key] = RecordCheck(header_from_files(header))
    return _checks[key]


@ray.remote
def verify_unit(
    key: str, header: dict[str, Any], unit: Unit, items: list[tuple[str, bytes, bytes | None]]
) -> Any:
    from compute.verify import check_unit

    try:
        return check_unit(check_for(key, header), unit, items)
    finally:
        release_freed_memory()
