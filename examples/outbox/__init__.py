"""The transactional outbox end to end: an order service writes orders and their events in
one PostgreSQL transaction, `processor outbox` publishes the events, and an invoicing
processor turns each placed order into exactly one invoice."""
