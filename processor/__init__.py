"""Exactly-once Kafka stream processor."""
