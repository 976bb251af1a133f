"""Schemathesis over every operation of the API on the real PostgreSQL, as an admin and as a guardian:
generated requests, valid and invalid, must meet no server error and no contract failure (status code,
content type, headers and body as the OpenAPI document declares them).

Bounded: ``AMARVOTE_SCHEMATHESIS_EXAMPLES`` examples per operation and mode (default 10; about a minute
here). Each operation also gets examples aimed at a real election with keys, so generation reaches past
"no such election"."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from helpers_service import api_settings
from hypothesis import HealthCheck, Phase
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from test_service_api import _new_election, _ok

from service.api.app import create_app
from service.security.auth import Role, issue_token
from service.settings import Settings

EXAMPLES = int(os.environ.get("AMARVOTE_SCHEMATHESIS_EXAMPLES", "10"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _fuzz(
    op: Any,
    mode: GenerationMode,
    fixed: dict[str, Any],
    callers: dict[str, dict[str, str]],
    examples: Counter[str],
    failures: list[str],
) -> None:
    checks = CHECKS + ([negative_data_rejection] if mode == GenerationMode.NEGATIVE else [])

    @hypothesis.given(case=op.as_strategy(generation_mode=mode, path_parameters=fixed or None))
    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        for who, headers in callers.items():
            examples[op.label] += 1
            response = case.call(headers=headers)
            try:
                case.validate_response(response, checks=checks, headers=headers)
            except FailureGroup as group:
                for f in group.exceptions:
                    failures.append(f"{op.label} [{mode.value}, {who}]: {f.title}: {f.message}")

    try:
        run()
    except hypothesis.errors.Unsatisfiable:
        # Nothing of this operation can be made invalid (no parameters, or only the fixed ones).
        assert mode == GenerationMode.NEGATIVE, op.label


@pytest.fixture(scope="module")
def settings(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return api_settings(
        db_url,
        tmp_path_factory.mktemp("data"),
        job_rate_limit_per_minute=1_000_000,
    )


@pytest.fixture(scope="module")
def app(settings: Settings) -> Iterator[FastAPI]:
    application = create_app(settings)
    with TestClient(application):  # runs the lifespan around the whole module
        yield application


def test_schemathesis_finds_no_server_error_and_no_contract_failure(app: FastAPI, settings: Settings) -> None:
    admin = {"Authorization": f"Bearer {issue_token(settings, 'admin', Role.ADMIN)}"}
    with TestClient(app) as client:
        election = _new_election(client, admin, name="Fuzzed")
        _ok(client.post(f"/api/elections/{election['election_id']}/open", headers=admin))
    guardian = {"Authorization": f"Bearer {election['guardians']['g1']['token']}"}
    callers = {"admin": admin, "guardian": guardian}

    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    examples: Counter[str] = Counter()
    spent: Counter[str] = Counter()
    failures: list[str] = []

    for op in operations:
        targets: list[dict[str, Any]] = [{}]
        if any(p.name == "election_id" for p in op.path_parameters):
            targets.append({"election_id": election["election_id"]})
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for fixed in targets:
                t0 = time.perf_counter()
                _fuzz(op, mode, fixed, callers, examples, failures)
                spent[op.label] += time.perf_counter() - t0

    summary = f"{len(operations)} operations, {sum(examples.values())} requests, {len(failures)} failures"
    print(summary, spent.most_common(8))
    assert len(operations) >= 25
    assert not failures, summary + "\n" + "\n".join(sorted(set(failures))[:40])
