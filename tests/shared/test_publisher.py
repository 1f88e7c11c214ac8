from __future__ import annotations

import socket
import time

import pytest

from shared.errors import PermanentError, TransientError
from shared.events import OutgoingEvent
from shared.publisher import EventHubPublisher, InMemoryPublisher


def ev(key: str, size: int) -> OutgoingEvent:
    return OutgoingEvent(key, b"x" * size, {"schema": 1, "count": 1})


def test_in_memory_publisher_one_partition_key_per_batch():
    pub = InMemoryPublisher()
    sent = pub.publish([ev("a", 10), ev("b", 10), ev("a", 10)])
    assert sent == 2
    assert [[e.partition_key for e in batch] for batch in pub.batches] == [["a", "a"], ["b"]]


def test_in_memory_publisher_splits_at_the_sdk_size_limit():
    pub = InMemoryPublisher(max_batch_bytes=10_000)
    events = [ev("a", 3000) for _ in range(7)]
    assert pub.publish(events) == 3
    assert [len(b) for b in pub.batches] == [3, 3, 1]
    assert pub.events == events


def test_in_memory_publisher_refuses_an_event_larger_than_a_batch():
    with pytest.raises(PermanentError):
        InMemoryPublisher(max_batch_bytes=1000).publish([ev("a", 2000)])


def test_event_hub_publisher_unreachable_hub_is_transient():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conn = (
        f"Endpoint=sb://127.0.0.1:{port};SharedAccessKeyName=k;SharedAccessKey=dGVzdA==;"
        "UseDevelopmentEmulator=true"
    )
    pub = EventHubPublisher.from_connection_string(conn, eventhub_name="readings", retry_total=0)
    started = time.monotonic()
    try:
        with pytest.raises(TransientError) as info:
            pub.publish([ev("a", 10)])
    finally:
        pub.close()
    assert info.value.retry_after == 5.0
    assert time.monotonic() - started < 30
