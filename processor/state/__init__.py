"""Exactly-once state stores: local RocksDB partitions whose changes commit with the
transaction through compacted changelog topics (see stores.py)."""
