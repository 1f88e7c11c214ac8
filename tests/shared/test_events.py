from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from shared.errors import ValidationError
from shared.events import decode_event, encode_device_events
from shared.readings import Reading

NOW = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)


def r(device: str, second: int, **metrics: float) -> Reading:
    return Reading(
        device, datetime(2026, 11, 27, 6, 59, second, tzinfo=UTC), metrics or {"rpm": 1500.0}
    )


def test_encode_device_events_one_event_per_device_with_properties():
    events = encode_device_events({"a": [r("a", 1), r("a", 2)], "b": [r("b", 1)]}, ingested_at=NOW)
    assert [(e.partition_key, e.properties) for e in events] == [
        ("a", {"schema": 1, "count": 2, "ingested_at": "2026-11-27T07:00:00.000Z"}),
        ("b", {"schema": 1, "count": 1, "ingested_at": "2026-11-27T07:00:00.000Z"}),
    ]
    assert json.loads(events[0].body) == {
        "schema": 1,
        "device_id": "a",
        "readings": [
            {"timestamp": "2026-11-27T06:59:01.000Z", "metrics": {"rpm": 1500.0}},
            {"timestamp": "2026-11-27T06:59:02.000Z", "metrics": {"rpm": 1500.0}},
        ],
    }


def test_encode_decode_round_trip():
    readings = [r("pump-1", s, temperature_c=70.0 + s, vibration_mm_s=3.5) for s in range(10)]
    [event] = encode_device_events({"pump-1": readings}, ingested_at=NOW)
    assert decode_event(event.body) == ("pump-1", readings)


def test_encode_splits_a_device_too_large_for_one_message_in_order():
    readings = [r("a", s % 60) for s in range(100)]
    events = encode_device_events({"a": readings}, ingested_at=NOW, max_body_bytes=1000)
    assert len(events) > 1
    assert all(len(e.body) <= 1000 for e in events)
    decoded = [x for e in events for x in decode_event(e.body)[1]]
    assert decoded == readings
    assert sum(e.properties["count"] for e in events) == 100


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"not json", "body"),
        (b"[1, 2]", "body"),
        (b'{"schema": 2, "device_id": "a", "readings": []}', "schema"),
        (b'{"schema": 1, "device_id": "a b", "readings": []}', "device_id"),
        (b'{"schema": 1, "device_id": "a", "readings": []}', "readings"),
        (
            b'{"schema": 1, "device_id": "a", "readings": [{"timestamp": "x", "metrics": {"a": 1}}]}',
            "timestamp",
        ),
        (
            b'{"schema": 1, "device_id": "a", "readings": [{"timestamp": "2026-11-27T06:59:00Z", "metrics": {"a": "1"}}]}',
            "metrics.a",
        ),
    ],
)
def test_decode_event_names_the_bad_field(body, field):
    with pytest.raises(ValidationError) as info:
        decode_event(body)
    assert info.value.field == field


def test_decode_event_accepts_old_readings():
    body = b'{"schema": 1, "device_id": "a", "readings": [{"timestamp": "2020-01-01T00:00:00Z", "metrics": {"a": 1}}]}'
    assert decode_event(body)[1][0].timestamp == datetime(2020, 1, 1, tzinfo=UTC)
