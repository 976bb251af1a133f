"""The relay's publish rate: a confirm per message in turn (pika's blocking channel) against a batch's
confirms awaited together (``bridge.brokers.rabbitmq.RabbitMQPublisher``), in one run.

    python benchmarks/bench_relay.py [--messages 3000] [--batch 200]

Both publish the same chunk messages (ids only, persistent, ``mandatory``) to the real topology (quorum
queues) in a fresh vhost, alternating three rounds each so the machine's noise falls on both. Writes
benchmarks/results/bench_relay.{md,json}. Needs RabbitMQ (``AMARVOTE_TEST_AMQP``, as the tests).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pika  # noqa: E402

from bridge.brokers.rabbitmq import (  # noqa: E402
    EXCHANGE,
    WORK_QUEUES,
    RabbitMQPublisher,
    declare,
    message_body,
    routing_key_for,
)
from service.jobs.outbox import Message  # noqa: E402
from tests.conftest import new_vhost  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def one_confirm_at_a_time(url: str, messages: list[Message]) -> float:
    """The relay before: every basic_publish on a confirming blocking channel waits for its confirm."""
    with pika.BlockingConnection(pika.URLParameters(url)) as conn:
        channel = conn.channel()
        declare(channel)
        channel.confirm_delivery()
        t = time.perf_counter()
        for m in messages:
            channel.basic_publish(
                EXCHANGE,
                routing_key_for(m.operation),
                json.dumps(message_body(m.job_id, m.task_id, m.operation)).encode(),
                pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent, message_id=f"outbox-{m.id}"),
                mandatory=True,
            )
        return time.perf_counter() - t


def batched(url: str, messages: list[Message], batch: int) -> float:
    publisher = RabbitMQPublisher(url)
    try:
        publisher.publish(messages[:1])  # connect and declare outside the timing, as the other does
        t = time.perf_counter()
        for i in range(1, len(messages), batch):
            result = publisher.publish(messages[i : i + batch])
            assert not result.refused, result
        return time.perf_counter() - t
    finally:
        publisher.close()


def purge(url: str) -> None:
    with pika.BlockingConnection(pika.URLParameters(url)) as conn:
        channel = conn.channel()
        for q in WORK_QUEUES:
            channel.queue_purge(q.name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    job = uuid.uuid4()
    messages = [Message(i, "TALLY", job, i) for i in range(1, args.messages + 1)]
    rates: dict[str, list[float]] = {"one at a time": [], f"batches of {args.batch}": []}
    with new_vhost() as url:
        for _ in range(args.rounds):
            rates["one at a time"].append(args.messages / one_confirm_at_a_time(url, messages))
            purge(url)
            rates[f"batches of {args.batch}"].append((args.messages - 1) / batched(url, messages, args.batch))
            purge(url)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    best = {k: max(v) for k, v in rates.items()}
    base = best["one at a time"]
    lines = [
        f"{args.messages} chunk messages to a quorum queue, {args.rounds} alternating rounds (best shown); "
        f"driver peak RSS {peak_mb:.0f} MiB.",
        "",
        "| publisher | messages/s | vs one at a time |",
        "|---|---:|---:|",
        *[f"| {k} | {v:,.0f} | {v / base:.1f}x |" for k, v in best.items()],
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_relay.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "bench_relay.json").write_text(
        json.dumps(
            {"messages": args.messages, "batch": args.batch, "rates": rates, "peak_rss_mb": peak_mb}, indent=2
        )
    )
    print("\n".join(lines))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
