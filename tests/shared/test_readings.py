from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from shared.errors import RequestError, ValidationError
from shared.readings import (
    Reading,
    format_timestamp,
    group_by_device,
    parse_body,
    parse_timestamp,
    row_key,
)

NOW = datetime(2026, 11, 27, 7, 0, 0, tzinfo=UTC)


def body(obj: object) -> bytes:
    return json.dumps(obj).encode()


def reading(
    device: str = "pump-0007", ts: str = "2026-11-27T06:59:00.000Z", **metrics: float
) -> dict:
    return {"device_id": device, "timestamp": ts, "metrics": metrics or {"temperature_c": 71.2}}


def details(exc: ValidationError) -> list[dict]:
    return [d.to_dict() for d in exc.details]


@pytest.mark.parametrize(
    "doc",
    [
        reading(),
        [reading()],
        {"readings": [reading()]},
    ],
)
def test_parse_body_accepts_three_shapes(doc):
    assert parse_body(body(doc), now=NOW) == [
        Reading("pump-0007", datetime(2026, 11, 27, 6, 59, tzinfo=UTC), {"temperature_c": 71.2})
    ]


def test_parse_body_normalises_offsets_and_truncates_to_milliseconds():
    [r] = parse_body(body(reading(ts="2026-11-27T08:59:00.123456+02:00")), now=NOW)
    assert r.timestamp == datetime(2026, 11, 27, 6, 59, 0, 123000, tzinfo=UTC)
    assert format_timestamp(r.timestamp) == "2026-11-27T06:59:00.123Z"
    assert row_key(r.timestamp) == "20261127T065900.123Z"


def test_parse_body_reports_every_bad_field_with_index():
    doc = [
        reading(),
        {
            "device_id": "bad id!",
            "timestamp": "2026-11-27T06:59:00",
            "metrics": {"Temp": 1, "rpm": True},
        },
        {"timestamp": "yesterday", "metrics": {}, "colour": "red"},
    ]
    with pytest.raises(ValidationError) as info:
        parse_body(body(doc), now=NOW)
    assert details(info.value) == [
        {
            "index": 1,
            "field": "device_id",
            "message": "must be 1-64 characters of A-Z a-z 0-9 _ . -",
        },
        {
            "index": 1,
            "field": "timestamp",
            "message": "needs a UTC offset such as Z or +00:00: '2026-11-27T06:59:00'",
        },
        {"index": 1, "field": "metrics.Temp", "message": "name must match [a-z][a-z0-9_]{0,39}"},
        {"index": 1, "field": "metrics.rpm", "message": "must be a finite number"},
        {"index": 2, "field": "colour", "message": "unknown field"},
        {"index": 2, "field": "device_id", "message": "is required"},
        {"index": 2, "field": "timestamp", "message": "not an ISO 8601 date-time: 'yesterday'"},
        {"index": 2, "field": "metrics", "message": "must hold 1 to 32 entries"},
    ]


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"device_id":"p","timestamp":"2026-11-27T06:59:00Z","metrics":{"rpm":NaN}}', None),
        (b'{"device_id":"p","timestamp":"2026-11-27T06:59:00Z","metrics":{"rpm":Infinity}}', None),
        (
            b'{"device_id":"p","timestamp":"2026-11-27T06:59:00Z","metrics":{"rpm":1e999}}',
            "metrics.rpm",
        ),
        (
            b'{"device_id":"p","timestamp":"2026-11-27T06:59:00Z","metrics":{"rpm":"12"}}',
            "metrics.rpm",
        ),
        (b'{"device_id":"p","timestamp":"2026-11-27T06:59:00Z","metrics":[1]}', "metrics"),
        (
            b'{"device_id":"'
            + b"x" * 65
            + b'","timestamp":"2026-11-27T06:59:00Z","metrics":{"a":1}}',
            "device_id",
        ),
    ],
)
def test_parse_body_rejects_non_finite_and_wrong_types(raw, field):
    if field is None:  # NaN/Infinity literals are not JSON at all
        with pytest.raises(RequestError) as req:
            parse_body(raw, now=NOW)
        assert req.value.status == 415
        return
    with pytest.raises(ValidationError) as info:
        parse_body(raw, now=NOW)
    assert info.value.field == field


def test_parse_body_rejects_more_than_32_metrics():
    metrics = {f"m{i}": float(i) for i in range(33)}
    with pytest.raises(ValidationError) as info:
        parse_body(body(reading(**metrics)), now=NOW)
    assert details(info.value) == [
        {"index": 0, "field": "metrics", "message": "must hold 1 to 32 entries"}
    ]


@pytest.mark.parametrize(
    ("offset", "message"),
    [
        (timedelta(minutes=5, seconds=1), "is more than 5 minutes in the future"),
        (-timedelta(days=7, seconds=1), "is older than 7 days"),
    ],
)
def test_parse_body_enforces_time_window(offset, message):
    ts = format_timestamp(NOW + offset)
    with pytest.raises(ValidationError) as info:
        parse_body(body(reading(ts=ts)), now=NOW)
    assert details(info.value) == [{"index": 0, "field": "timestamp", "message": message}]


def test_parse_body_accepts_window_edges():
    edges = [
        reading(ts=format_timestamp(NOW + timedelta(minutes=5))),
        reading(ts=format_timestamp(NOW - timedelta(days=7))),
    ]
    assert len(parse_body(body(edges), now=NOW)) == 2


def test_parse_body_413_for_too_many_readings():
    with pytest.raises(RequestError) as info:
        parse_body(body([reading()] * 5001), now=NOW)
    assert (info.value.status, info.value.code) == (413, "too_many_readings")


def test_parse_body_413_for_too_many_bytes():
    with pytest.raises(RequestError) as info:
        parse_body(b" " * (1024 * 1024 + 1), now=NOW)
    assert (info.value.status, info.value.code) == (413, "too_large")


@pytest.mark.parametrize(
    ("raw", "ctype", "code"),
    [
        (b"device_id=p", None, "not_json"),
        (b"\xff\xfe", None, "not_json"),
        (body(reading()), "text/plain", "unsupported_media_type"),
    ],
)
def test_parse_body_415_for_non_json(raw, ctype, code):
    with pytest.raises(RequestError) as info:
        parse_body(raw, now=NOW, content_type=ctype)
    assert (info.value.status, info.value.code) == (415, code)


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ([], "body"),
        ({"readings": []}, "readings"),
        ({"readings": 3}, "readings"),
        (42, "body"),
        ({"readings": [], "x": 1}, "x"),
    ],
)
def test_parse_body_rejects_empty_and_odd_envelopes(doc, field):
    with pytest.raises(ValidationError) as info:
        parse_body(body(doc), now=NOW)
    assert info.value.field == field


def test_parse_timestamp_rejects_date_only():
    with pytest.raises(ValidationError):
        parse_timestamp("2026-11-27")


def test_group_by_device_keeps_arrival_order():
    rs = parse_body(
        body(
            [
                reading("a", "2026-11-27T06:59:02Z"),
                reading("b"),
                reading("a", "2026-11-27T06:59:01Z"),
            ]
        ),
        now=NOW,
    )
    groups = group_by_device(rs)
    assert list(groups) == ["a", "b"]
    assert [format_timestamp(r.timestamp) for r in groups["a"]] == [
        "2026-11-27T06:59:02.000Z",
        "2026-11-27T06:59:01.000Z",
    ]


def test_a_time_is_written_alike_whatever_its_offset_and_however_often():
    from datetime import timezone

    from shared.readings import format_timestamp, row_key

    utc = datetime(2026, 11, 27, 6, 0, 0, 123456, tzinfo=UTC)
    plus2 = utc.astimezone(timezone(timedelta(hours=2)))
    for ts in (plus2, utc, plus2):
        assert format_timestamp(ts) == "2026-11-27T06:00:00.123Z"
        assert row_key(ts) == "20261127T060000.123Z"
    later = utc + timedelta(milliseconds=1)
    assert (format_timestamp(later), row_key(later)) == (
        "2026-11-27T06:00:00.124Z",
        "20261127T060000.124Z",
    )
    assert format_timestamp(datetime(999, 1, 2, 3, 4, 5, 999000, tzinfo=UTC)) == (
        "999-01-02T03:04:05.999Z"
    )
