"""The relay's publish rate, in one run:

- publishers: a confirm per message in turn (pika's blocking channel) against a batch's confirms
  awaited together (``bridge.brokers.rabbitmq.RabbitMQPublisher``);
- relays: one relay process against two, each with its own database and broker connections, draining
  the same outbox rows: as the relay is (``bridge.relay.Relay``: rows reserved in a short transaction,
  published outside it) and as it was before issue 20 (``LockHeldRelay``: the takers' advisory lock
  and the transaction held across the publish and the wait for confirms).

    python benchmarks/bench_relay.py [--messages 3000] [--batch 200] [--relay-messages 6000]
        [--only relays] [--broker-latency 0 0.05]

Everything publishes the same chunk messages (ids only, persistent, ``mandatory``) to the real topology
(quorum queues) in a fresh vhost (and, for the relays, a fresh PostgreSQL database), alternating rounds
so the machine's noise falls on every variant. ``--broker-latency`` adds a simulated network round
trip to each relay batch's publish (``DistantBroker``; none, then 50 ms by default): on one machine a
batch's confirms take a few milliseconds, less than the relay's database work, so what holding the
lock across them cost shows fully only with a broker further away. Writes
benchmarks/results/bench_relay.{md,json}. Needs RabbitMQ and PostgreSQL (``AMARVOTE_TEST_AMQP``,
``AMARVOTE_TEST_PG``, as the tests).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pika  # noqa: E402
from sqlalchemy import insert  # noqa: E402
from sqlalchemy import text as sa_text  # noqa: E402

from bridge.brokers.rabbitmq import (  # noqa: E402
    EXCHANGE,
    WORK_QUEUES,
    RabbitMQPublisher,
    declare,
    message_body,
    routing_key_for,
)
from bridge.relay import Relay  # noqa: E402
from service.db import migrate  # noqa: E402
from service.db.models import Outbox  # noqa: E402
from service.db.session import SessionFactory, in_transaction, session_factory  # noqa: E402
from service.jobs import outbox  # noqa: E402
from service.jobs.outbox import Message  # noqa: E402
from tests.conftest import new_database, new_vhost  # noqa: E402

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


class LockHeldRelay(Relay):
    """The relay before issue 20, for comparison: one transaction from ``take_due`` (and so the takers'
    advisory lock) through the publish and the wait for confirms to ``mark_sent``."""

    def run_once(self) -> int:
        def batch(session: Any) -> int:
            rows = outbox.take_due(session, self.batch_size, window=self.window)
            if not rows:
                return 0
            result = self.publisher.publish([outbox.message_of(r) for r in rows])
            by_id = {r.id: r for r in rows}
            outbox.mark_sent(session, [by_id[i] for i in result.sent])
            return len(result.sent)

        return in_transaction(self.factory, batch)


RELAYS = {"reserved, published outside (now)": Relay, "lock held across the publish (before)": LockHeldRelay}


class DistantBroker:
    """The real publisher behind ``latency`` seconds more per batch: a broker across a network, or a
    quorum queue whose replicas confirm from other machines (on one machine a confirm takes ~0 ms)."""

    def __init__(self, inner: RabbitMQPublisher, latency: float) -> None:
        self.inner, self.latency = inner, latency

    def publish(self, messages: Any) -> Any:
        time.sleep(self.latency)
        return self.inner.publish(messages)

    def close(self) -> None:
        self.inner.close()


def relay_process(
    kind: str, db_url: str, amqp_url: str, batch: int, latency: float, start: Any, done: Any
) -> None:
    """One relay in its own process: connects first, waits for the start, drains the outbox, reports."""
    factory = session_factory(db_url)
    publisher = RabbitMQPublisher(amqp_url)
    publisher.connect()
    relay = RELAYS[kind](
        factory, DistantBroker(publisher, latency) if latency else publisher, batch_size=batch
    )
    with factory() as s:
        outbox.unsent(s)  # the pool's connection, opened outside the timing
    start.wait()
    n = 0
    while (m := relay.run_once()) > 0:
        n += m
    publisher.close()
    done.put(n)


def fill_outbox(factory: SessionFactory, n: int) -> None:
    job = uuid.uuid4()
    with factory.begin() as s:
        s.execute(sa_text("TRUNCATE outbox RESTART IDENTITY"))
        s.execute(insert(Outbox), [{"operation": "TALLY", "job_id": job, "task_id": i} for i in range(n)])


def relays(
    kind: str, count: int, db_url: str, amqp_url: str, messages: int, batch: int, latency: float
) -> float:
    """Messages/s of ``count`` relay processes draining ``messages`` due rows together."""
    factory = session_factory(db_url)
    fill_outbox(factory, messages)
    ctx = multiprocessing.get_context("spawn")
    start, done = ctx.Barrier(count + 1), ctx.Queue()
    procs = [
        ctx.Process(target=relay_process, args=(kind, db_url, amqp_url, batch, latency, start, done))
        for _ in range(count)
    ]
    for p in procs:
        p.start()
    start.wait(120)
    t = time.perf_counter()
    published = sum(done.get(timeout=600) for _ in procs)
    elapsed = time.perf_counter() - t
    for p in procs:
        p.join(30)
    with factory() as s:
        assert published == messages and outbox.unsent(s) == 0, (published, outbox.unsent(s))
    return messages / elapsed


def purge(url: str) -> None:
    with pika.BlockingConnection(pika.URLParameters(url)) as conn:
        channel = conn.channel()
        for q in WORK_QUEUES:
            channel.queue_purge(q.name)


def publishers(args: argparse.Namespace, url: str) -> tuple[dict[str, list[float]], list[str]]:
    job = uuid.uuid4()
    messages = [Message(i, "TALLY", job, i) for i in range(1, args.messages + 1)]
    rates: dict[str, list[float]] = {"one at a time": [], f"batches of {args.batch}": []}
    for _ in range(args.rounds):
        rates["one at a time"].append(args.messages / one_confirm_at_a_time(url, messages))
        purge(url)
        rates[f"batches of {args.batch}"].append((args.messages - 1) / batched(url, messages, args.batch))
        purge(url)
    best = {k: max(v) for k, v in rates.items()}
    base = best["one at a time"]
    return rates, [
        f"{args.messages} chunk messages to a quorum queue, {args.rounds} alternating rounds (best shown).",
        "",
        "| publisher | messages/s | vs one at a time |",
        "|---|---:|---:|",
        *[f"| {k} | {v:,.0f} | {v / base:.1f}x |" for k, v in best.items()],
    ]


def relay_rates(args: argparse.Namespace, url: str) -> tuple[dict[str, list[float]], list[str]]:
    variants = [(kind, latency) for latency in args.broker_latency for kind in RELAYS]
    rates: dict[str, list[float]] = {f"{k}, {ms(lat)}, {n}": [] for k, lat in variants for n in (1, 2)}
    with new_database() as db_url:
        migrate.upgrade(db_url)
        for _ in range(args.rounds):
            for kind, latency in variants:
                for n in (1, 2):
                    rate = relays(kind, n, db_url, url, args.relay_messages, args.batch, latency)
                    rates[f"{kind}, {ms(latency)}, {n}"].append(rate)
                    purge(url)
    best = {k: max(v) for k, v in rates.items()}
    rows = []
    for kind, latency in variants:
        one, two = best[f"{kind}, {ms(latency)}, 1"], best[f"{kind}, {ms(latency)}, 2"]
        rows.append(f"| {kind} | {ms(latency)} | {one:,.0f} | {two:,.0f} | {two / one:.2f}x |")
    return rates, [
        f"{args.relay_messages} due outbox rows drained by relay processes (batches of {args.batch}, each "
        f"relay its own PostgreSQL and RabbitMQ connections), {args.rounds} alternating rounds (best shown). "
        "Added broker latency: a simulated round trip per batch (``DistantBroker``).",
        "",
        "| relay | added broker latency | 1 relay, messages/s | 2 relays, messages/s | 2 vs 1 |",
        "|---|---:|---:|---:|---:|",
        *rows,
    ]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--relay-messages", type=int, default=6000)
    ap.add_argument("--only", choices=["publishers", "relays"], help="run one of the two comparisons")
    ap.add_argument(
        "--broker-latency",
        type=float,
        nargs="+",
        default=[0.0, 0.05],
        help="seconds added to each relay batch's publish (DistantBroker), one table row each",
    )
    args = ap.parse_args()
    rates: dict[str, dict[str, list[float]]] = {}
    lines: list[str] = []
    with new_vhost() as url:
        if args.only != "relays":
            rates["publishers"], text = publishers(args, url)
            lines += text
        if args.only != "publishers":
            rates["relays"], text = relay_rates(args, url)
            lines += ([""] if lines else []) + text
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines += [
        "",
        f"Driver peak RSS {peak_mb:.0f} MiB; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}.",
    ]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_relay.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "bench_relay.json").write_text(
        json.dumps(
            {
                "messages": args.messages,
                "relay_messages": args.relay_messages,
                "batch": args.batch,
                "rates": rates,
                "peak_rss_mb": peak_mb,
            },
            indent=2,
        )
    )
    print("\n".join(lines))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
