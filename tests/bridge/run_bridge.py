"""A bridge process for the crash tests: ``python tests/bridge/run_bridge.py DB_URL AMQP_URL RAY_ADDRESS``.

It runs the real executor over RabbitMQ (:class:`bridge.executor.Executor`, ``RabbitMQBroker``) with the
test bodies, connected to the test session's Ray, and handles SIGTERM like the production entry point.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import ray

from bridge.brokers.rabbitmq import RabbitMQBroker
from bridge.executor import Executor
from cli.worker import run_until_signalled
from service.db.session import session_factory
from service.settings import Settings
from tests.bridge.fakes import BODY


def main() -> None:
    db_url, amqp_url, ray_address = sys.argv[1:4]
    grace = float(sys.argv[4]) if len(sys.argv) > 4 else 30.0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s bridge-proc %(levelname)s %(message)s")
    settings = Settings(
        database_url=db_url,
        amqp_url=amqp_url,
        ray_address=ray_address,
        max_attempts=3,
        retry_backoff_seconds=0.2,
        lease_seconds=5,
        task_memory_mb=64,
        max_in_flight=4,
    )
    ray.init(address=ray_address, log_to_driver=False)
    bridge = Executor(
        session_factory(settings.sqlalchemy_url),
        RabbitMQBroker(amqp_url),
        settings,
        bodies={"TALLY": BODY},
        shutdown_grace=grace,
    )
    run_until_signalled(bridge)
    print("bridge exited cleanly", flush=True)


if __name__ == "__main__":
    main()
