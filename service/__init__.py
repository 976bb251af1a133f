"""The HTTP service: elections, ballots and jobs in PostgreSQL behind a FastAPI API."""
