"""Ingest → the Event Hubs emulator → the score pipeline, with the app's own code and the real SDK."""

from __future__ import annotations

import json
import random
import threading
from datetime import UTC, datetime, timedelta

import azure.functions as func
import pytest
from azure.eventhub import EventHubConsumerClient

import ingest_function
import score_function
from local.eventhubs.runner import EmulatorThread
from local.eventhubs.semantics import partition_for_key
from shared.events import decode_event
from shared.microbatch import MicroBatcher
from shared.pipeline import ScoringPipeline
from shared.publisher import EventHubPublisher
from shared.readings import format_timestamp
from shared.scoring import AmlClient
from shared.store import InMemoryTableStore
from shared.wiring import IngestApp, ScoreApp
from tests.support.aml_standin import KEY
from tests.support.functions import eventhub_batch
from tests.support.waiting import wait_until

NOW = datetime.now(UTC).replace(microsecond=0)
DEVICES = ["pump-0001", "fan-0002", "compressor-0003"]

pytestmark = pytest.mark.stack


@pytest.fixture
def hubs(tmp_path):
    with EmulatorThread(tmp_path / "eventhubs") as emulator:
        yield emulator


def consume_all(hubs: EmulatorThread, count: int) -> list:
    got: list = []
    client = EventHubConsumerClient.from_connection_string(
        hubs.connection_string(), consumer_group="$Default", eventhub_name="readings"
    )
    worker = threading.Thread(
        target=client.receive_batch,
        kwargs={
            "on_event_batch": lambda ctx, events: got.extend((ctx.partition_id, e) for e in events),
            "starting_position": "-1",
            "max_wait_time": 0.5,
        },
        daemon=True,
    )
    worker.start()
    wait_until(lambda: len(got) >= count, timeout=20)
    client.close()
    worker.join(10)
    return got


def test_ingest_function_publishes_to_the_emulator_and_the_pipeline_scores_it(
    hubs, monkeypatch, aml
):
    publisher = EventHubPublisher.from_connection_string(
        hubs.connection_string(), eventhub_name="readings"
    )
    monkeypatch.setattr(ingest_function, "_app", IngestApp(publisher))
    readings = [
        {
            "device_id": device,
            "timestamp": format_timestamp(NOW - timedelta(seconds=10 * (4 - i))),
            "metrics": {
                "temperature_c": 60.0 + i,
                "rpm": 500.0 if (device, i) == ("fan-0002", 2) else 50.0,
            },
        }
        for device in DEVICES
        for i in range(4)
    ]
    request = func.HttpRequest(
        method="POST",
        url="/api/readings",
        headers={"content-type": "application/json"},
        params={},
        route_params={},
        body=json.dumps({"readings": readings}).encode(),
    )
    try:
        response = ingest_function.main(request)
    finally:
        publisher.close()
    assert (response.status_code, json.loads(response.get_body())) == (
        202,
        {"accepted": 12, "events": 3},
    )

    received = consume_all(hubs, 3)
    assert sorted((p, decode_event(b"".join(e.body))[0]) for p, e in received) == sorted(
        (partition_for_key(d, ["0", "1", "2", "3"]), d) for d in DEVICES
    )
    for _, event in received:
        # Sent to the device's partition by id (one batch per partition), so the service's
        # hash placed nothing: the partition above is the client's, and it is the same one.
        assert event.partition_key is None
        assert event.properties[b"count"] == 4

    # What the Functions host would do with them: one trigger batch per partition, through the
    # azure-functions converter, into score_function.main.
    store = InMemoryTableStore()
    t = [0.0]
    batcher = MicroBatcher(
        AmlClient(aml.url, KEY),
        clock=lambda: t[0],
        sleep=lambda s: t.__setitem__(0, t[0] + s),
        rng=random.Random(0),
    )
    monkeypatch.setattr(
        score_function, "_app", ScoreApp(ScoringPipeline(store=store, batcher=batcher))
    )
    try:
        for partition in sorted({p for p, _ in received}):
            events = [e for p, e in received if p == partition]
            score_function.main(
                eventhub_batch(
                    [b"".join(e.body) for e in events],
                    partition=partition,
                    first_sequence=events[0].sequence_number,
                    enqueued=events[0].enqueued_time,
                )
            )
    finally:
        batcher.close()
        batcher.scorer.close()
    anomaly_day = (NOW - timedelta(seconds=20)).date()  # the flagged reading's own day
    assert [a["device_id"] for a in store.list_anomalies(anomaly_day, limit=10).items] == [
        "fan-0002"
    ]
    window = {"start": NOW - timedelta(hours=1), "end": NOW + timedelta(hours=1), "limit": 10}
    assert {d: len(store.list_predictions(d, **window).items) for d in DEVICES} == dict.fromkeys(
        DEVICES, 4
    )
