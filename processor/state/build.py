"""The stores a config declares, wired to their changelog reader."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer

from processor.config import Config
from processor.kafka import client_settings
from processor.state.recovery import CONSUMER_SETTINGS
from processor.state.stores import Stores
from processor.state.timers import TIMERS_STORE


def build_stores(config: Config, metrics, client_hooks: dict[str, Any]) -> Stores | None:
    """The stores of the config (None without any), with their changelog reader."""
    state = config.state
    if not state.stores and not state.timers:
        return None
    ttls = {name: store.ttl_ms for name, store in state.stores.items()}
    if state.timers:
        ttls[TIMERS_STORE] = None
    settings = {**client_settings(config), **client_hooks, "group.id": f"{config.app_id}.restore",
                **CONSUMER_SETTINGS}
    # an instance's own directory: a restarted instance finds its stores, two never share one
    return Stores(config.app_id, state.dir / config.instance_id, ttls, lambda: Consumer(settings), metrics)
