"""Exceptions that cross Ray keep their type and message (issue 17).

Ray pickles a task body's exception and rebuilds it on the driver; pickling an exception calls
``cls(*self.args)``, so a class whose ``__init__`` does not take its own message back was rebuilt
wrong (a ``DecryptionError`` joined the characters of its message: "g; u; a; r; d; ...") or not at
all (``BallotInvalid`` and ``Unavailable`` raised ``TypeError``). Every error class a chunk task body
can raise, directly or through what it calls, goes through a pickle round trip here; two go through
a real Ray task, and the job's status shows the message intact.
"""

from __future__ import annotations

import pickle
from dataclasses import replace
from pathlib import Path

import pytest
import ray.cloudpickle

from bridge.broker import BrokerLost
from bridge.brokers.stub import StubBroker
from bridge.chunk_run import TimeLimitExceeded
from bridge.executor import Executor
from bridge.probe import ClusterMismatch
from bridge.tasks import ChunkContext
from bridge.tasks.common import NotDecryptable
from bridge.tasks.tally import InvalidBallots
from bridge.tasks.verify import NotVerifiable
from bridge.verify import FailedChunk, VerifyFailed
from compute.decryption_share import DecryptionError
from compute.encrypt import EncryptionError
from compute.keyceremony import KeyCeremonyError
from compute.tally import TallyError
from compute.validate import BallotInvalid
from service import errors
from service.jobs.finalize import FinalizeError
from service.jobs.status import get_job, job_document
from service.jobs.transitions import Outcome, Policy
from service.jobs.verification import VerifyError
from service.security.sealing import SealError
from service.security.secrets import ConfigError
from tests.bridge.helpers_bridge import make_tally_job, tasks_of

PROBLEMS = ["guardian g1: share of c1/s1 does not verify", "guardian g2: share of c1/s2 is missing"]

CASES: list[BaseException] = [
    DecryptionError(PROBLEMS),
    DecryptionError([f"problem {i}" for i in range(25)]),  # the message says "(+5 more)"
    BallotInvalid("ballot-7", "selection proof: bad", "contest-1", "sel-2"),
    BallotInvalid("ballot-8", "manifest hash does not match the election's"),
    TallyError("tally of another manifest"),
    KeyCeremonyError("backup of g2 does not verify"),
    EncryptionError("contest extended data exceeds 510 bytes"),
    errors.DomainError("a domain error"),
    errors.BadRequest("bad request"),
    errors.Unauthorized("no token"),
    errors.Forbidden("not yours"),
    errors.NotFound("election 3 does not exist"),
    errors.Conflict("election 3 is not closed"),
    errors.Invalid("ballot b1: bad proof"),
    errors.TooManyRequests("slow down"),
    errors.Unavailable("every KDF slot is taken", retry_after=7),
    NotDecryptable("tally 2 is not decrypted"),
    NotVerifiable("not a verify row"),
    InvalidBallots("2 invalid ballot(s): ballot b1: bad"),
    VerifyError("reports missing"),
    FinalizeError("slices missing"),
    SealError("the credential file does not open"),
    ConfigError("AMARVOTE_SERVER_SECRET must have at least 32 bytes"),
    VerifyFailed(Path("/tmp/record"), [FailedChunk("ballots 1-10", "ValueError: x")], 4),
    BrokerLost("connection reset", published=None),
    TimeLimitExceeded("still running after its time limit of 3 s"),
    ClusterMismatch("set AMARVOTE_SERVER_SECRET on every node"),
]


def _state(exc: BaseException) -> dict[str, object]:
    return {k: v for k, v in vars(exc).items() if not k.startswith("__")}


@pytest.mark.parametrize("dumps", [pickle.dumps, ray.cloudpickle.dumps], ids=["pickle", "cloudpickle"])
@pytest.mark.parametrize("exc", CASES, ids=lambda e: type(e).__name__)
def test_error_survives_pickling_with_its_type_message_and_fields(exc: BaseException, dumps) -> None:  # type: ignore[no-untyped-def]
    back = pickle.loads(dumps(exc))
    assert type(back) is type(exc)
    assert str(back) == str(exc)
    assert back.args == exc.args
    assert _state(back) == _state(exc)


# Task bodies for the Ray test, imported by path on the Ray worker.


def raise_decryption_error(ctx: ChunkContext) -> Outcome:
    raise DecryptionError(PROBLEMS)


def raise_ballot_invalid(ctx: ChunkContext) -> Outcome:
    raise BallotInvalid("ballot-7", "selection proof: bad", "contest-1", "sel-2")


class OddError(ValueError):
    """A class no one taught to pickle (its ``__init__`` takes a list): the task's own guard covers it."""

    def __init__(self, items: list[str]) -> None:
        super().__init__(", ".join(items))


def raise_odd_error(ctx: ChunkContext) -> Outcome:
    raise OddError(["first item", "second item"])


@pytest.mark.services
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("raise_decryption_error", "DecryptionError: " + "; ".join(PROBLEMS)),
        (
            "raise_ballot_invalid",
            "BallotInvalid: ballot ballot-7, contest contest-1, selection sel-2: selection proof: bad",
        ),
        ("raise_odd_error", "TaskError: OddError: first item, second item"),
    ],
)
def test_error_raised_in_a_ray_task_reaches_the_job_status_intact(
    settings, factory, ray_local, clean, body: str, expected: str
) -> None:  # type: ignore[no-untyped-def]
    _, job_id = make_tally_job(factory, ballots=2, chunk_size=2)
    broker = StubBroker()
    for task in tasks_of(factory, job_id):
        broker.publish(task.id, "TALLY", job_id)
    one_attempt = replace(Policy.from_settings(settings), max_attempts=1)
    bodies = {"TALLY": f"tests.bridge.test_errors_across_ray:{body}"}
    executor = Executor(
        factory, broker, settings, bodies=bodies, poll_interval=0.05, shutdown_grace=5, policy=one_attempt
    )
    executor.run_until_idle(timeout=120)
    with factory() as s:
        doc = job_document(s, get_job(s, job_id), stuck_after=600)
    assert doc["status"] == "FAILED", doc
    assert [c["error"] for c in doc["failedChunkErrors"]] == [expected], doc
