"""The local broker's cluster ids are valid for kafka-storage on every draw."""

from __future__ import annotations

import base64

from localkafka.broker import _cluster_id


def test_cluster_ids_never_look_like_an_option():
    ids = [_cluster_id() for _ in range(5_000)]  # about 1 in 64 raw draws starts with "-"
    assert not [i for i in ids if i.startswith("-")]
    assert all(len(base64.urlsafe_b64decode(i + "==")) == 16 for i in ids)
