"""The RabbitMQ topology as declared, and the outbox relay, against the real broker and database."""

from __future__ import annotations

import json
import subprocess
import threading
import uuid
from urllib.parse import urlparse

import pika
import pytest
from pika.exceptions import UnroutableError
from sqlalchemy import func, insert, select

from bridge.brokers import rabbitmq as topology
from bridge.brokers.rabbitmq import RabbitMQPublisher
from bridge.relay import Relay
from service.db.models import Outbox
from service.jobs.outbox import Message
from tests.bridge.helpers_bridge import drain_queue, make_tally_job, queue_depth

pytestmark = pytest.mark.services


def _queue_arguments(amqp_url: str) -> dict[str, dict]:
    vhost = urlparse(amqp_url).path.lstrip("/")
    out = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "arguments", "--formatter", "json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {q["name"]: {k: v for k, _t, v in q["arguments"]} for q in json.loads(out)}


def test_topology_is_idempotent_and_never_drops(amqp_url: str) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        ch = conn.channel()
        topology.declare(ch)
        topology.declare(ch)  # a second bridge or relay declares the same thing: no error
        ch.confirm_delivery()
        with pytest.raises(UnroutableError):  # nothing bound: refused, not silently confirmed
            ch.basic_publish(topology.EXCHANGE, "election.nowhere", b"{}", mandatory=True)
    finally:
        conn.close()
    args = _queue_arguments(amqp_url)
    for q in topology.WORK_QUEUES:
        a = args[q.name]
        assert a["x-queue-type"] == "quorum"
        assert a["x-max-length"] == 100_000
        assert a["x-overflow"] == "reject-publish"  # never the default drop-head
        assert a["x-dead-letter-exchange"] == topology.DEAD_LETTER_EXCHANGE
        assert a["x-dead-letter-routing-key"] == q.routing_key
        assert a["x-dead-letter-strategy"] == "at-least-once"
        assert a["x-delivery-limit"] == topology.DELIVERY_LIMIT
        assert "x-message-ttl" not in a and "x-expires" not in a
        assert args[q.dead_letter_queue] == {"x-queue-type": "quorum"}
    assert [q.routing_key for q in topology.WORK_QUEUES] == [
        "election.tally",
        "election.decryption",
        "election.compensated.decryption",
        "election.combine",
        "election.verify",
    ]


def test_relay_publishes_each_row_once_with_ids_only(factory, amqp_url, clean) -> None:  # type: ignore[no-untyped-def]
    _, job_id = make_tally_job(factory, ballots=50, chunk_size=10)
    relay = Relay(factory, RabbitMQPublisher(amqp_url))
    try:
        assert relay.run_once() == 5
        assert relay.run_once() == 0
    finally:
        relay.publisher.close()
    bodies = drain_queue(amqp_url, "tally.queue")
    assert len(bodies) == 5
    for body in bodies:
        # ids only: never ballots, keys or credentials
        assert set(body) == {"job_id", "task_id", "operation"}
        assert body["job_id"] == str(job_id) and body["operation"] == "TALLY"
        assert isinstance(body["task_id"], int)
        assert len(json.dumps(body)) < 120
    with factory() as s:
        assert s.scalar(select(func.count()).select_from(Outbox).where(Outbox.sent_at.is_(None))) == 0


def _rows(operation: str, task_ids: range | list[int]) -> list[dict]:
    job = uuid.uuid4()
    return [{"operation": operation, "job_id": job, "task_id": i} for i in task_ids]


def test_concurrent_relays_publish_each_row_once(factory, amqp_url, clean) -> None:  # type: ignore[no-untyped-def]
    with factory.begin() as s:
        s.execute(insert(Outbox), _rows("COMBINE_DECRYPTION", range(300)))
    relays = [Relay(factory, RabbitMQPublisher(amqp_url), batch_size=7) for _ in range(4)]
    counts = [0] * 4

    def run(i: int) -> None:
        while (n := relays[i].run_once()) > 0:
            counts[i] += n
        relays[i].publisher.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(counts) == 300 and sum(1 for c in counts if c) > 1
    ids = [b["task_id"] for b in drain_queue(amqp_url, "combine.queue")]
    assert sorted(ids) == list(range(300))


def test_relay_keeps_rows_pending_when_the_broker_refuses(factory, amqp_url, clean) -> None:  # type: ignore[no-untyped-def]
    # The combine queue is deleted once the publisher has declared the topology: its routing key is
    # then bound to nothing and a publish to it is unroutable.
    publisher = RabbitMQPublisher(amqp_url)
    publisher.connect()
    with pika.BlockingConnection(pika.URLParameters(amqp_url)) as conn:
        conn.channel().queue_delete("combine.queue")
    with factory.begin() as s:
        s.execute(insert(Outbox), _rows("COMBINE_DECRYPTION", [1]) + _rows("TALLY", [2]))
    relay = Relay(factory, publisher)
    try:
        relay.run_once()
    finally:
        publisher.close()
    with factory() as s:
        pending = [o.operation for o in s.scalars(select(Outbox).where(Outbox.sent_at.is_(None)))]
    assert pending == ["COMBINE_DECRYPTION"]  # unroutable: kept, retried next round
    dead = Relay(factory, RabbitMQPublisher("amqp://guest:guest@127.0.0.1:1/none"))
    with factory.begin() as s:
        s.execute(insert(Outbox), _rows("TALLY", [3]))
    assert dead.run_once() == 0  # broker unreachable: nothing marked sent
    with factory() as s:
        assert s.scalar(select(func.count()).select_from(Outbox).where(Outbox.sent_at.is_(None))) == 2
    assert queue_depth(amqp_url, "tally.queue") == 1


def test_a_full_queue_refuses_and_the_batch_says_which(amqp_url: str) -> None:
    # A policy's lower max-length wins over the queue's argument: the tally queue holds 2 here. A
    # quorum queue checks the limit against what it has committed, so a batch in flight together may
    # overshoot it (measured: 8 of 8 confirmed); the publishes after that are refused, by id.
    vhost = amqp_url.rsplit("/", 1)[1]
    limit = '{"max-length": 2, "overflow": "reject-publish"}'
    policy = ["set_policy", "-p", vhost, "--apply-to", "queues", "tiny", "^tally\\.queue$", limit]
    subprocess.run(["rabbitmqctl", "-q", *policy], check=True, capture_output=True)
    publisher = RabbitMQPublisher(amqp_url)
    job = uuid.uuid4()
    try:
        publisher.connect()
        _purge(amqp_url, "tally.queue")
        first = publisher.publish([Message(i, "TALLY", job, i) for i in range(1, 5)])
        second = publisher.publish([Message(i, "TALLY", job, i) for i in range(5, 9)])
    finally:
        publisher.close()
        subprocess.run(["rabbitmqctl", "-q", "clear_policy", "-p", vhost, "tiny"], capture_output=True)
    sent, refused = first.sent + second.sent, first.refused + second.refused
    assert sorted(sent + refused) == list(range(1, 9))
    assert second.refused == [5, 6, 7, 8]
    assert queue_depth(amqp_url, "tally.queue") == len(sent)
    _purge(amqp_url, "tally.queue")


def _purge(amqp_url: str, queue: str) -> None:
    with pika.BlockingConnection(pika.URLParameters(amqp_url)) as conn:
        conn.channel().queue_purge(queue)
