"""The CLI's one-message errors: what failed, and what to do."""

from __future__ import annotations

import uuid

from cli.errors import explain
from cli.pipeline import FailedJob, JobFailed
from service.errors import Conflict


def test_a_failed_job_names_its_chunks_first_error_and_the_fix() -> None:
    job = uuid.uuid4()
    exc = JobFailed(
        "decryption",
        [FailedJob(job, "PARTIAL_DECRYPTION", "guardian-1", 3, 9, "chunk 2: SealError: does not open")],
    )
    text = explain(exc)
    assert f"job {job} (PARTIAL_DECRYPTION, guardian guardian-1): 3 of 9 chunk(s) FAILED" in text
    assert "first error: chunk 2: SealError" in text
    assert "AMARVOTE_SERVER_SECRET" in text, "a SealError means the workers hold another secret"
    assert f"amarvote jobs redrive {job}" in text and f"amarvote jobs show {job}" in text


def test_a_domain_error_is_its_reason_and_others_have_no_traceback() -> None:
    assert explain(Conflict("election 3 is open")) == "election 3 is open"
    assert explain(ValueError("bad\nsecond line")) == "ValueError: bad"


def test_a_guardian_command_error_is_its_message() -> None:
    from cli.guardian.api import ApiError, GuardianError

    assert explain(GuardianError("refusing to decrypt: x")) == "refusing to decrypt: x"
    err = ApiError("PUT", "/api/elections/1/guardians/g1/shares/3", 409, "unit 3 is being checked")
    assert (
        explain(err)
        == "PUT /api/elections/1/guardians/g1/shares/3: the API answered 409: unit 3 is being checked"
    )
