"""The transactional outbox relay: `processor outbox -c FILE` publishes the rows of a
PostgreSQL outbox table to Kafka, exactly once, in commit order (see relay.py)."""
