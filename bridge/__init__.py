"""The bridge between PostgreSQL's job tables, RabbitMQ and Ray.

Module map (each small, one job):

- ``topology``   exchange, queues, dead-letter queues and their arguments, declared in one place
- ``relay``      the outbox relay: unsent outbox rows → RabbitMQ, with confirms, ``SKIP LOCKED``
- ``consumer``   ``Bridge``: messages → claim → Ray task → ack after the commit; reconnects; SIGTERM
- ``tasks``      the Ray task (``run_chunk``) and one body per operation (tally, decryption, combine)
- ``reconciler`` republishes chunk tasks PostgreSQL says are stuck
- ``embedded``   ``EmbeddedRunner``: the same path without a broker (SQLite default)
- ``runner``     blocking entry points for the CLI: ``run_bridge``, ``run_relay``, ``run_reconciler``,
                 ``run_embedded`` (also ``python -m bridge [bridge|relay|reconcile|embedded]``)
- ``ray_runtime`` connect to a Ray cluster by address or start a local one
- ``metrics``    custom Ray metrics: chunks done/failed, chunk latency, ballots processed
- ``db``         one engine per URL per process, and transactions that survive a dropped connection

The state machine itself (claim, complete, fail, release, re-drive) lives in
``service.jobs.transitions``; what happens when a job's last chunk lands, in ``service.jobs.finalize``.
"""
