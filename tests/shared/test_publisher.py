from __future__ import annotations

import socket
import threading
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


def test_partition_resolver_agrees_with_the_service_hash_the_emulator_implements():
    from local.eventhubs.semantics import partition_for_key
    from shared.publisher import partition_resolver

    ids = [str(i) for i in range(8)]
    resolve = partition_resolver(ids)
    keys = [f"pump-{i:04d}" for i in range(200)] + ["a", "x' or 1", "ünïcode-é"]
    assert [resolve(k) for k in keys] == [partition_for_key(k, ids) for k in keys]


@pytest.mark.stack
def test_a_request_from_many_devices_is_one_send_per_partition_in_order(tmp_path):
    from azure.eventhub import EventHubConsumerClient

    from local.eventhubs.runner import EmulatorThread
    from local.eventhubs.semantics import partition_for_key
    from tests.support.waiting import wait_until

    with EmulatorThread(tmp_path / "hubs") as hubs:
        pub = EventHubPublisher.from_connection_string(
            hubs.connection_string(), eventhub_name="readings"
        )
        events = [
            OutgoingEvent(f"pump-{d:04d}", f"pump-{d:04d}|{n}|".encode(), {"schema": 1})
            for n in range(3)
            for d in range(100)
        ]
        try:
            sent = pub.publish(events)
        finally:
            pub.close()
        assert sent == 4  # one batch per partition, not one per device
        got: list = []
        client = EventHubConsumerClient.from_connection_string(
            hubs.connection_string(), consumer_group="$Default", eventhub_name="readings"
        )
        worker = threading.Thread(
            target=client.receive_batch,
            kwargs={
                "on_event_batch": lambda ctx, batch: got.extend(
                    (ctx.partition_id, e.body_as_str()) for e in batch
                ),
                "starting_position": "-1",
                "max_wait_time": 0.5,
            },
            daemon=True,
        )
        worker.start()
        assert wait_until(lambda: len(got) >= 300, timeout=20)
        client.close()
        worker.join(10)
    ids = ["0", "1", "2", "3"]
    seen: dict[str, list[str]] = {}
    for partition, body in got:
        device, n = body.split("|")[:2]
        assert partition == partition_for_key(device, ids)
        seen.setdefault(device, []).append(n)
    assert all(ns == ["0", "1", "2"] for ns in seen.values())  # each device's order kept
    assert len(seen) == 100
