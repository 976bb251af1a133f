"""The bridge between PostgreSQL's job tables, a message broker and Ray.

Module map (each small, one job):

- ``broker``        what the executor needs of a broker (``Broker``) and the relay of a publisher
- ``brokers/``      ``rabbitmq`` (topology, consumer, publisher: the only module that imports pika),
                    ``outbox`` (the database's outbox itself: the embedded default), ``stub`` (in memory,
                    tests)
- ``executor``      the one chunk executor: deliveries -> claim -> Ray task -> settle, a thin composition
                    of the modules below
- ``chunk_rules``   the executor's decisions, pure (no Ray, no database): each delivery's next step and
                    settlement, the database-outage hold and give-back, the time limit, shutdown
- ``chunk_db``      a delivery's database steps (give back, claim, record a failure), as events
- ``chunk_run``     a claimed chunk on Ray: memory bound, Ray's retries off, the time limit and kill
- ``error_text``    an error as one bounded line (``describe_error``), free of Ray: chunks, callbacks, verify
- ``outage``        the hold while the database is away: held deliveries, the probe, their restart
- ``leases``        the in-flight chunks' leases: renewed at their interval, released at shutdown
- ``shutdown``      the executor's clean stop: grace period, release, requeue, cancel
- ``in_flight``     the deliveries an executor holds, each settled once
- ``relay``         the outbox relay: due outbox rows reserved, then published with confirms outside any
                    transaction
- ``loop``          the periodic loop (``run``/``stop``/``run_once``) of the three housekeeping workers,
                    each its own module with one job:
- ``reconciler``    republishes chunk tasks PostgreSQL says are stuck (fails those whose worker died at
                    every attempt), notes what it found on stuck jobs
- ``callback_sender`` delivers the due completion callbacks (signed POSTs, never from a chunk worker)
- ``escrow_sweeper`` erases key escrows that outlived their job
- ``tasks/``        the Ray task (``run_chunk``: the worker's own settings, read once, in the body's
                    ``ChunkContext``) and one body per operation: ``tally``, ``decryption``
                    (shares from an escrowed key), ``share_check`` (shares a guardian uploaded), ``combine``,
                    ``verify`` (a VERIFY job's units); ``common`` loads what every body needs
- ``verify``        ``record verify`` on Ray: a record's ballot files checked in chunks, one task each
- ``verify_unit``   its Ray task, in a module of its own so that a worker imports Ray and ``compute`` only
- ``worker_memory`` hands a Ray worker's freed heap back to the system after each task (glibc)
- ``ray_runtime``   connect to a Ray cluster by address, or start a local one of our own
- ``probe``         at start, every Ray node must hold this service's server secret and version
- ``metrics``       custom Ray metrics: chunks done/failed, chunk latency, ballots processed; the
                    executor's hook (``ExecutorMetrics``)

The state machine itself (claim, complete, fail, release, re-drive) lives in
``service.jobs.transitions``; the outbox in ``service.jobs.outbox``; what happens when a job's last chunk
lands, in ``service.jobs.finalize``. The composition (which broker, with which relay and housekeeping) is
the CLI's (``cli/worker.py``).
"""
