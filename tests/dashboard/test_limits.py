from __future__ import annotations

import json

import pytest

from dashboard.limits import Limits, PushError, RateGate, parse_rows


def refusal(call) -> tuple[int, str, int | None]:
    with pytest.raises(PushError) as caught:
        call()
    return caught.value.status, caught.value.message, caught.value.retry_after


def test_rate_gate_allows_120_posts_a_minute_then_429_until_the_minute_passes():
    gate = RateGate(Limits())
    for i in range(120):
        gate.admit_post(1000.0 + i * 0.1, big_table=False)
    assert refusal(lambda: gate.admit_post(1012.0, big_table=False)) == (
        429,
        "more than 120 POST rows requests in a minute",
        60,
    )
    gate.admit_post(1060.01, big_table=False)  # the first post has left the minute


def test_rate_gate_drops_to_120_posts_an_hour_on_a_big_table():
    gate = RateGate(Limits())
    for i in range(120):
        gate.admit_post(i * 30.0, big_table=True)
    status, message, _ = refusal(lambda: gate.admit_post(3599.0, big_table=True))
    assert (status, message) == (429, "more than 120 POSTs in an hour on a 250,000-row table")
    gate.admit_post(3599.0, big_table=False)  # the same post on small tables is fine


def test_rate_gate_counts_rows_per_hour():
    gate = RateGate(Limits(rows_per_hour=25_000))
    gate.admit_rows(0.0, 10_000)
    gate.admit_rows(1.0, 10_000)
    assert refusal(lambda: gate.admit_rows(2.0, 5_001))[:2] == (
        429,
        "more than 25,000 rows added in an hour",
    )
    gate.admit_rows(3600.5, 10_000)  # the first 10,000 are more than an hour old


def test_rate_gate_refuses_a_sixth_pending_post():
    gate = RateGate(Limits())
    with gate.pending(), gate.pending(), gate.pending(), gate.pending(), gate.pending():
        status, message, retry = refusal(lambda: gate.pending().__enter__())
    assert (status, message, retry) == (429, "more than 5 pending POST requests", 60)
    assert gate.peak_pending == 6
    with gate.pending():
        pass  # everything was released


@pytest.mark.parametrize(
    ("body", "bare", "message"),
    [
        (b"{not json", False, "body is not JSON"),
        (b'{"rows": [{"a": NaN}]}', False, "body is not JSON"),
        (b'{"rows": {"a": 1}}', False, "body must carry an array of row objects"),
        (b"[1, 2]", True, "body must carry an array of row objects"),
        (b'[{"a": 1}]', False, "body must carry an array of row objects"),
        (b'{"rows": [{"a": [1]}]}', False, "row values must be strings, numbers, booleans or null"),
        (
            json.dumps([{"a": "x" * 4001}]).encode(),
            True,
            "a string value is longer than 4,000 characters",
        ),
        (
            json.dumps({"rows": [{}] * 10_001}).encode(),
            False,
            "10001 rows in one POST; at most 10,000",
        ),
    ],
)
def test_parse_rows_refuses_bad_bodies_with_400(body, bare, message):
    with pytest.raises(PushError) as caught:
        parse_rows(body, bare=bare, limits=Limits())
    assert (caught.value.status, caught.value.code, caught.value.message) == (
        400,
        "InvalidRequest",
        message,
    )
    _status, headers, reply = caught.value.reply()
    assert json.loads(reply) == {"error": {"code": "InvalidRequest", "message": message}}
    assert "Retry-After" not in headers


def test_parse_rows_reads_both_body_shapes():
    rows = [{"device_id": "d", "n": 1, "ok": True, "x": None, "s": "x" * 4000}]
    assert parse_rows(json.dumps({"rows": rows}).encode(), bare=False, limits=Limits()) == rows
    assert parse_rows(json.dumps(rows).encode(), bare=True, limits=Limits()) == rows
