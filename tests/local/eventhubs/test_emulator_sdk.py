"""The emulator driven by the unmodified azure-eventhub SDK, as an application would use it."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from azure.eventhub import EventData, EventHubConsumerClient, EventHubProducerClient
from azure.eventhub.aio import EventHubConsumerClient as AsyncConsumer
from azure.eventhub.aio import EventHubProducerClient as AsyncProducer
from azure.eventhub.exceptions import AuthenticationError, EventHubError

from local.eventhubs.runner import EmulatorThread
from local.eventhubs.semantics import partition_for_key
from tests.support.waiting import wait_until

pytestmark = pytest.mark.stack


@pytest.fixture
def hubs(tmp_path: Path):
    with EmulatorThread(tmp_path / "eventhubs") as emulator:
        yield emulator


def producer(hubs: EmulatorThread, **kwargs) -> EventHubProducerClient:
    return EventHubProducerClient.from_connection_string(
        hubs.connection_string(), eventhub_name="readings", retry_total=0, **kwargs
    )


def send(hubs: EmulatorThread, bodies: list[str], **batch_kwargs) -> None:
    with producer(hubs) as client:
        batch = client.create_batch(**batch_kwargs)
        for body in bodies:
            batch.add(EventData(body))
        client.send_batch(batch)


@dataclass
class Consumer:
    """What a background consumer saw: events (or sequence numbers) and errors."""

    events: list = field(default_factory=list)
    errors: list = field(default_factory=list)


@contextmanager
def consuming(
    hubs: EmulatorThread, partition: str, *, group: str = "$Default", **receive_kwargs
) -> Iterator[Consumer]:
    """Run `EventHubConsumerClient.receive` in a thread for the block; close it after."""
    seen = Consumer()
    client = EventHubConsumerClient.from_connection_string(
        hubs.connection_string(), consumer_group=group, eventhub_name="readings"
    )
    worker = threading.Thread(
        target=client.receive,
        kwargs={
            "on_event": lambda ctx, event: seen.events.append(event),
            "on_error": lambda ctx, error: seen.errors.append(error),
            "partition_id": partition,
            **receive_kwargs,
        },
        daemon=True,
    )
    worker.start()
    try:
        yield seen
    finally:
        client.close()
        worker.join(10)


def receive(
    hubs: EmulatorThread,
    partition: str,
    count: int,
    *,
    starting_position: object = "-1",
    inclusive: bool = False,
    timeout: float = 15.0,
    **receive_kwargs,
) -> list:
    """Receive until `count` events arrived (or the deadline), then close."""
    with consuming(
        hubs,
        partition,
        starting_position=starting_position,
        starting_position_inclusive=inclusive,
        **receive_kwargs,
    ) as seen:
        wait_until(lambda: len(seen.events) >= count, timeout=timeout)
    return seen.events


def test_hub_and_partition_properties(hubs):
    with producer(hubs) as client:
        hub = client.get_eventhub_properties()
        empty = client.get_partition_properties("2")
    assert hub["eventhub_name"] == "readings"
    assert hub["partition_ids"] == ["0", "1", "2", "3"]
    assert abs(hub["created_at"] - datetime.now(UTC)) < timedelta(minutes=1)
    assert (empty["id"], empty["is_empty"], empty["last_enqueued_sequence_number"]) == (
        "2",
        True,
        -1,
    )


def test_send_by_key_lands_where_the_sdk_resolver_says(hubs):
    key = "pump-0007"
    send(hubs, ["a", "b", "c"], partition_key=key)
    target = partition_for_key(key, ["0", "1", "2", "3"])
    with producer(hubs) as client:
        props = {p: client.get_partition_properties(p) for p in ["0", "1", "2", "3"]}
    assert props[target]["last_enqueued_sequence_number"] == 2
    assert [p for p, v in props.items() if not v["is_empty"]] == [target]
    events = receive(hubs, target, 3)
    assert [(e.sequence_number, e.body_as_str(), e.partition_key) for e in events] == [
        (0, "a", b"pump-0007"),
        (1, "b", b"pump-0007"),
        (2, "c", b"pump-0007"),
    ]
    assert [int(e.offset) for e in events] == sorted({int(e.offset) for e in events})


def test_send_by_partition_id_and_round_robin(hubs):
    send(hubs, ["x"], partition_id="3")
    for i in range(4):
        send(hubs, [f"rr{i}"])
    with producer(hubs) as client:
        counts = [
            client.get_partition_properties(p)["last_enqueued_sequence_number"] + 1 for p in "0123"
        ]
    assert counts == [1, 1, 1, 2]


def test_receive_from_each_kind_of_position(hubs):
    send(hubs, [f"e{i}" for i in range(5)], partition_id="0")
    everything = receive(hubs, "0", 5)
    assert [e.body_as_str() for e in everything] == ["e0", "e1", "e2", "e3", "e4"]
    third = everything[2]
    by_seq = receive(hubs, "0", 2, starting_position=2)
    assert [e.sequence_number for e in by_seq] == [3, 4]
    by_seq_incl = receive(hubs, "0", 3, starting_position=2, inclusive=True)
    assert [e.sequence_number for e in by_seq_incl] == [2, 3, 4]
    by_offset = receive(hubs, "0", 3, starting_position=third.offset, inclusive=True)
    assert [e.sequence_number for e in by_offset] == [2, 3, 4]
    by_time = receive(hubs, "0", 5, starting_position=third.enqueued_time - timedelta(seconds=5))
    assert [e.sequence_number for e in by_time] == [0, 1, 2, 3, 4]


def test_receive_from_latest_sees_only_new_events(hubs):
    send(hubs, ["old"], partition_id="1")
    with consuming(hubs, "1", starting_position="@latest") as seen:
        assert wait_until(lambda: hubs.receiver_count("readings", "1") == 1, timeout=10)
        send(hubs, ["new"], partition_id="1")
        assert wait_until(lambda: len(seen.events) >= 1, timeout=10)
    assert [e.body_as_str() for e in seen.events] == ["new"]


def test_events_and_numbers_survive_a_restart(tmp_path):
    data = tmp_path / "eventhubs"
    with EmulatorThread(data) as first:
        send(first, ["a", "b"], partition_id="2")
        before = receive(first, "2", 2)
    with EmulatorThread(data) as second:
        with producer(second) as client:
            props = client.get_partition_properties("2")
        after = receive(second, "2", 2)
        send(second, ["c"], partition_id="2")
        more = receive(second, "2", 3)
    assert props["last_enqueued_sequence_number"] == 1
    assert [(e.sequence_number, e.offset, e.body_as_str()) for e in after] == [
        (e.sequence_number, e.offset, e.body_as_str()) for e in before
    ]
    assert [e.sequence_number for e in more] == [0, 1, 2]


def test_a_wrong_key_is_refused_as_an_authentication_failure(hubs):
    conn = hubs.connection_string().replace("SAS_KEY_VALUE", "not-the-key")
    with (
        EventHubProducerClient.from_connection_string(
            conn, eventhub_name="readings", retry_total=0
        ) as client,
        pytest.raises(AuthenticationError),
    ):
        client.get_eventhub_properties()


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_an_unknown_hub_is_refused(hubs):
    with (
        EventHubProducerClient.from_connection_string(
            hubs.connection_string(), eventhub_name="nosuchhub", retry_total=0
        ) as client,
        pytest.raises(EventHubError, match="Status code: 404"),
    ):
        client.send_batch([EventData("x")])
    # The SDK leaves its management socket to the garbage collector after a 404: collect it
    # here, where its ResourceWarning is expected, not in a later test.
    gc.collect()


def test_an_event_over_one_mib_is_refused(hubs):
    with producer(hubs) as client:
        batch = client.create_batch()
        with pytest.raises(ValueError, match="EventDataBatch has reached its size limit"):
            batch.add(EventData(b"x" * (1024 * 1024 + 1)))


def test_a_receiver_with_a_higher_epoch_takes_the_partition_over(hubs):
    send(hubs, ["a"], partition_id="0")
    with consuming(hubs, "0", starting_position="-1", owner_level=0) as first:
        assert wait_until(lambda: [e.sequence_number for e in first.events] == [0], timeout=10)
        # A higher epoch, so the first receiver's automatic reconnects (epoch 0) are refused
        # rather than taking the partition back (equal epochs are covered in test_semantics).
        stolen = receive(hubs, "0", 1, owner_level=1)
        assert [e.sequence_number for e in stolen] == [0]
        assert wait_until(lambda: bool(first.errors), timeout=10)
    assert "stolen" in str(first.errors[0]).lower() or "epoch" in str(first.errors[0]).lower()


def test_the_asyncio_clients_work_too(hubs):
    async def run() -> list[str]:
        async with AsyncProducer.from_connection_string(
            hubs.connection_string(), eventhub_name="readings"
        ) as client:
            assert (await client.get_eventhub_properties())["partition_ids"] == ["0", "1", "2", "3"]
            batch = await client.create_batch(partition_id="1")
            batch.add(EventData("async-1"))
            batch.add(EventData("async-2"))
            await client.send_batch(batch)
        got: list[str] = []
        consumer = AsyncConsumer.from_connection_string(
            hubs.connection_string(), consumer_group="$Default", eventhub_name="readings"
        )

        async def on_event(context, event) -> None:
            got.append(event.body_as_str())

        task = asyncio.create_task(
            consumer.receive(on_event=on_event, partition_id="1", starting_position="-1")
        )
        deadline = time.monotonic() + 10
        while len(got) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await consumer.close()
        task.cancel()  # the async receive loop does not return by itself after close()
        await asyncio.gather(task, return_exceptions=True)
        return got

    assert asyncio.run(run()) == ["async-1", "async-2"]


def test_the_server_itself_refuses_an_event_over_one_mib(tmp_path):
    # The attach reply normally tells the SDK 1 MiB, and the SDK refuses on its own (above); here
    # it is told 4 MiB so the oversized event reaches the server, which must refuse it.
    with (
        EmulatorThread(tmp_path / "big", advertised_max_message_size=4 * 1024 * 1024) as hubs,
        producer(hubs) as client,
    ):
        batch = client.create_batch(partition_id="0")
        batch.add(EventData(b"x" * (2 * 1024 * 1024)))
        with pytest.raises(EventHubError, match="LinkMessageSizeExceeded"):
            client.send_batch(batch)
        assert client.get_partition_properties("0")["is_empty"] is True


def test_an_unknown_partition_is_refused(hubs):
    with producer(hubs) as client:
        with pytest.raises(EventHubError, match="404"):
            client.get_partition_properties("9")
        with pytest.raises(EventHubError, match="Invalid partition 9"):
            client.send_batch([EventData("x")], partition_id="9")


def test_an_unknown_consumer_group_is_refused(hubs, caplog):
    # The SDK keeps retrying a refused link in the background (as it does against the service);
    # what matters here is that the emulator refuses it with the service's condition.
    send(hubs, ["x"], partition_id="0")
    with (
        caplog.at_level("INFO", logger="local.eventhubs.connection"),
        consuming(hubs, "0", group="nosuchgroup", starting_position="-1") as seen,
    ):
        assert wait_until(lambda: "refused attach" in caplog.text, timeout=15)
    refusal = next(r.getMessage() for r in caplog.records if "refused attach" in r.getMessage())
    assert "amqp:not-found" in refusal
    assert (
        "The messaging entity 'readings/ConsumerGroups/nosuchgroup' could not be found." in refusal
    )
    assert seen.events == []


def test_a_start_past_the_end_waits_for_that_event(hubs):
    send(hubs, ["a", "b", "c"], partition_id="2")  # sequence numbers 0..2
    with consuming(hubs, "2", starting_position=5) as seen:
        assert wait_until(lambda: hubs.receiver_count("readings", "2") == 1, timeout=10)
        send(hubs, [f"n{i}" for i in range(5)], partition_id="2")  # 3..7
        assert wait_until(lambda: len(seen.events) >= 2, timeout=10)
    assert [e.sequence_number for e in seen.events] == [6, 7]
