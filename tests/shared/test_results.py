from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from shared.errors import TransientError
from shared.predictions import Prediction
from shared.publisher import InMemoryPublisher
from shared.results import ResultsSink, encode_result_events
from tests.support.waiting import wait_until

T0 = datetime(2026, 11, 27, 6, 0, tzinfo=UTC)


def pred(device: str, i: int, **extra) -> Prediction:
    return Prediction(
        device,
        T0 + timedelta(seconds=i),
        0.1,
        False,
        "rpm",
        0.2,
        False,
        "toy-1",
        {"rpm": 1.0},
        extra,
    )


def test_results_sink_publishes_one_event_per_device_with_extras():
    hub = InMemoryPublisher()
    sink = ResultsSink(hub)
    sink.offer([pred("a", 0, forecast_24h=3.5), pred("b", 0), pred("a", 1)])
    assert hub.events == []  # offer only queues: no I/O on the scoring path
    assert sink.pump() == 3
    assert [e.partition_key for e in hub.events] == ["a", "b"]
    doc = json.loads(hub.events[0].body)
    assert doc["schema"] == 1
    assert [p["timestamp"] for p in doc["predictions"]] == [
        "2026-11-27T06:00:00.000Z",
        "2026-11-27T06:00:01.000Z",
    ]
    assert doc["predictions"][0]["forecast_24h"] == 3.5
    assert sink.stats.predictions_sent == 3


def test_results_sink_never_raises_and_counts_drops(caplog):
    hub = InMemoryPublisher()
    hub.fail_with = TransientError("down")
    sink = ResultsSink(hub)
    sink.offer([pred("a", 0), pred("a", 1)])
    assert sink.pump() == 0
    assert (sink.stats.predictions_dropped, sink.stats.failures) == (2, 1)
    assert "2 predictions not published" in caplog.text


def test_encode_result_events_splits_large_devices():
    events = encode_result_events([pred("a", i, note="x" * 1000) for i in range(600)])
    assert len(events) > 1
    assert all(len(e.body) <= 256 * 1024 for e in events)
    assert sum(len(json.loads(e.body)["predictions"]) for e in events) == 600


def test_results_sink_queue_is_bounded():
    sink = ResultsSink(InMemoryPublisher(), max_queued=3)
    sink.offer([pred("a", i) for i in range(5)])
    assert sink.stats.predictions_dropped == 2
    assert sink.pump() == 3


def test_results_sink_thread_publishes_and_close_drains():
    hub = InMemoryPublisher()
    sink = ResultsSink(hub)
    sink.start()
    sink.offer([pred("a", 0)])
    assert wait_until(lambda: sink.stats.predictions_sent == 1, timeout=5)
    sink.offer([pred("b", 0)])
    sink.close()
    assert sorted(e.partition_key for e in hub.events) == ["a", "b"]
