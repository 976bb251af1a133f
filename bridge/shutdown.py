"""The executor's clean stop: what happens to the deliveries in flight when it is asked to stop.

Its one job (:func:`shut_down`, after SIGTERM or ``Executor.stop``): cancel consumption, give the chunks in
flight ``grace`` seconds to finish, release the rest (``Leases.release``: PENDING again, the attempt not
counted; their worker threads stop waiting and requeue the message, recording nothing), ask Ray to cancel
their tasks and, 5 s later, kill the worker of any that did not stop (one blocked in a call must not keep
a CPU of the cluster for ever). While it waits it lets the broker send the worker threads' settlements,
and requeues at once any delivery that still arrives.

Threads: the main thread (the broker's), once, at the end of ``Executor.run``. The worker threads it waits
for are daemons: everything is released or settled before it returns, and one still blocked in a call
must not keep the process from exiting.
"""

from __future__ import annotations

import time

from bridge.broker import Broker, BrokerLost, Settlement
from bridge.in_flight import InFlight
from bridge.leases import Leases

KILL_AFTER = 5.0  # seconds a released task has to stop before its worker is killed


def shut_down(broker: Broker, in_flight: InFlight, leases: Leases, grace: float) -> int:
    """Stop: settle, or release and requeue, every delivery in flight. How many were released."""
    try:
        broker.cancel()
    except BrokerLost:
        pass
    _drain_while(broker, in_flight, grace)
    leftovers = in_flight.snapshot()
    for w in leftovers:
        w.running.released = True
        if w.lease is not None:
            leases.release(w.lease.task_id)
        w.running.cancel()
    _drain_while(broker, in_flight, KILL_AFTER)
    for w in leftovers:
        w.running.kill_if_running()  # released and requeued already; its transaction, if any, rolls back
    _drain(broker, 0.2)
    return len(leftovers)


def _drain_while(broker: Broker, in_flight: InFlight, seconds: float) -> None:
    """Drain until nothing is in flight, for at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while len(in_flight) and time.monotonic() < deadline:
        _drain(broker, 0.2)


def _drain(broker: Broker, seconds: float) -> None:
    """Let the broker send queued settlements for ``seconds``; settle at once what arrives now."""
    try:
        for delivery in broker.poll(seconds, 0):
            broker.settle(delivery, Settlement.REQUEUE)
    except BrokerLost:
        time.sleep(seconds)
