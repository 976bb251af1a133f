"""Implementations of ``bridge.broker.Broker``: RabbitMQ, the database outbox, and an in-memory stub."""
