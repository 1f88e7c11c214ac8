"""Checkpoints through the SDK's BlobCheckpointStore on Azurite, and consumers sharing a hub."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from azure.eventhub import EventData, EventHubConsumerClient, EventHubProducerClient
from azure.eventhub.extensions.checkpointstoreblob import BlobCheckpointStore
from azure.storage.blob import BlobServiceClient

from local.eventhubs.runner import EmulatorThread
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.stack


@pytest.fixture
def hubs(tmp_path: Path):
    with EmulatorThread(tmp_path / "eventhubs") as emulator:
        yield emulator


@pytest.fixture
def container(azurite_blobs: str) -> str:
    name = f"checkpoints-{uuid.uuid4().hex[:8]}"
    with BlobServiceClient.from_connection_string(azurite_blobs) as service:
        service.create_container(name)  # the processor needs it to exist
    return name


def send(hubs: EmulatorThread, partition: str, bodies: list[str]) -> None:
    with EventHubProducerClient.from_connection_string(
        hubs.connection_string(), eventhub_name="readings"
    ) as client:
        batch = client.create_batch(partition_id=partition)
        for body in bodies:
            batch.add(EventData(body))
        client.send_batch(batch)


def consume_with_checkpoints(
    hubs: EmulatorThread, blob_conn: str, container: str, expect: int
) -> list:
    got: list = []
    client = EventHubConsumerClient.from_connection_string(
        hubs.connection_string(),
        consumer_group="$Default",
        eventhub_name="readings",
        checkpoint_store=BlobCheckpointStore.from_connection_string(blob_conn, container),
    )

    def on_event(context, event) -> None:
        got.append((context.partition_id, event.sequence_number, event.body_as_str()))
        context.update_checkpoint(event)

    worker = threading.Thread(
        target=client.receive,
        kwargs={"on_event": on_event, "partition_id": "0", "starting_position": "-1"},
        daemon=True,
    )
    worker.start()
    wait_until(lambda: len(got) >= expect, timeout=20)
    client.close()
    worker.join(10)
    return got


@pytest.mark.azurite
def test_checkpoint_and_resume_without_replay_or_loss(hubs, azurite_blobs, container):
    send(hubs, "0", [f"a{i}" for i in range(6)])
    first = consume_with_checkpoints(hubs, azurite_blobs, container, 6)
    send(hubs, "0", ["b0", "b1", "b2"])
    second = consume_with_checkpoints(hubs, azurite_blobs, container, 3)
    assert [s for _, s, _ in first] == [0, 1, 2, 3, 4, 5]
    assert [(s, b) for _, s, b in second] == [(6, "b0"), (7, "b1"), (8, "b2")]


@pytest.mark.azurite
def test_two_consumer_processes_share_the_partitions_and_lose_nothing(
    hubs, azurite_blobs, container, tmp_path
):
    stop = tmp_path / "stop"
    outs = [tmp_path / f"consumer{i}.txt" for i in range(2)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.local.eventhubs.consumer_process",
                hubs.connection_string(),
                azurite_blobs,
                container,
                str(out),
                str(stop),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for out in outs
    ]
    sent: set[tuple[str, int]] = set()
    rounds = [0]
    producer = EventHubProducerClient.from_connection_string(
        hubs.connection_string(), eventhub_name="readings"
    )

    def received() -> list[set[tuple[str, int]]]:
        out = []
        for path in outs:
            lines = path.read_text().split() if path.exists() else []
            out.append({(lines[i], int(lines[i + 1])) for i in range(0, len(lines) - 1, 2)})
        return out

    def balanced_and_complete() -> bool:
        # Keep traffic flowing (one event per partition per round) while the processors balance;
        # done when everything sent before this round arrived and the last round split 2 + 2.
        a, b = received()
        last = rounds[0] - 1
        split = (
            last >= 0
            and {p for p, s in a if s == last}.isdisjoint({p for p, s in b if s == last})
            and len({p for p, s in a if s == last}) == len({p for p, s in b if s == last}) == 2
        )
        done = sent <= (a | b) and split
        if not done:
            for p in "0123":
                batch = producer.create_batch(partition_id=p)
                batch.add(EventData(f"{p}-{rounds[0]}"))
                producer.send_batch(batch)
                sent.add((p, rounds[0]))
            rounds[0] += 1
        return done

    try:
        assert wait_until(balanced_and_complete, timeout=60, interval=0.5)
    finally:
        producer.close()
        stop.touch()
        for proc in procs:
            proc.wait(30)
    a, b = received()
    assert sent <= a | b  # nothing lost
    assert a
    assert b
