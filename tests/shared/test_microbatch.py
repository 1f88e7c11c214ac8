from __future__ import annotations

import json
import random
import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest

from shared.errors import TransientError
from shared.microbatch import MicroBatcher, build_body, chunk_device, pack_requests
from shared.readings import Reading, format_timestamp
from shared.scoring import AmlClient, EndpointConfigError
from tests.support.aml_standin import KEY, readings_of
from tests.support.waiting import wait_until

T0 = datetime(2026, 11, 27, 6, 0, tzinfo=UTC)


def readings(device: str, n: int, **metrics: float) -> list[Reading]:
    return [
        Reading(device, T0 + timedelta(seconds=10 * i), metrics or {"rpm": 1500.0})
        for i in range(n)
    ]


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []
        self.lock = threading.Lock()

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.sleeps.append(seconds)
            self.t += seconds


@pytest.fixture
def make_batcher(aml):
    made: list[MicroBatcher] = []

    def make(**kwargs) -> MicroBatcher:
        clock = FakeClock()
        kwargs.setdefault("clock", clock)
        kwargs.setdefault("sleep", clock.sleep)
        kwargs.setdefault("rng", random.Random(0))
        batcher = MicroBatcher(AmlClient(aml.url, KEY), **kwargs)
        made.append(batcher)
        return batcher

    yield make
    for b in made:
        b.close()
        b.scorer.close()


def test_chunk_device_respects_rows_and_bytes():
    rs = readings("a", 25)
    by_rows = chunk_device("a", rs, max_rows=10, max_bytes=1 << 20)
    assert [len(c.readings) for c in by_rows] == [10, 10, 5]
    by_bytes = chunk_device("a", rs, max_rows=1000, max_bytes=600)
    assert all(len(build_body([c], {})) <= 600 for c in by_bytes)
    assert [r for c in by_bytes for r in c.readings] == rs


@pytest.mark.parametrize("max_bytes", [1 << 20, 200])
def test_chunk_device_encodes_readings_in_columns(max_bytes):
    ts = [
        datetime(2026, 11, 27, 6, 0, tzinfo=UTC),
        datetime(2026, 11, 27, 6, 0, 0, 7000, tzinfo=UTC),
        datetime(2026, 11, 27, 8, 0, 0, 123000, tzinfo=timezone(timedelta(hours=2))),
        datetime(999, 1, 2, 3, 4, 5, 999000, tzinfo=UTC),
    ]
    rs = [Reading("a", t, {"rpm": 1500.5, "temp_c": 40 + i}) for i, t in enumerate(ts)]
    chunks = chunk_device("a", rs, max_rows=10, max_bytes=max_bytes)
    sent = [json.loads("{" + c.columns_json + "}") for c in chunks]
    assert [readings_of(device) for device in sent] == [
        [r.to_json() for r in c.readings] for c in chunks
    ]
    assert [s for c in chunks for s in c.stamps] == [
        "2026-11-27T06:00:00.000Z",
        "2026-11-27T06:00:00.007Z",
        "2026-11-27T06:00:00.123Z",
        "999-01-02T03:04:05.999Z",
    ]
    assert [device["timestamps"] for device in sent] == [c.stamps for c in chunks]
    assert [c.size for c in chunks] == [len(c.columns_json) for c in chunks]
    assert len(chunks) == (1 if max_bytes > 200 else 2)


def test_chunk_device_writes_an_instant_alike_whatever_its_offset_and_however_often():
    utc = datetime(2026, 11, 27, 6, 0, 0, 123000, tzinfo=UTC)
    plus2 = utc.astimezone(timezone(timedelta(hours=2)))
    for ts in (plus2, utc, plus2, utc + timedelta(microseconds=1000)):
        [chunk] = chunk_device("a", [Reading("a", ts, {"rpm": 1.0})], max_rows=1, max_bytes=1 << 20)
        assert chunk.stamps == [format_timestamp(ts)]
    assert format_timestamp(plus2) == "2026-11-27T06:00:00.123Z"


def test_chunk_device_names_every_metric_and_sends_null_for_one_a_reading_lacks():
    rs = [
        Reading("a", T0, {"rpm": 1.0, "temp_c": 2.0}),
        Reading("a", T0 + timedelta(seconds=10), {"temp_c": 3.0, "rpm": 4.0}),
        Reading("a", T0 + timedelta(seconds=20), {"flow": 5.0}),
    ]
    [chunk] = chunk_device("a", rs, max_rows=10, max_bytes=1 << 20)
    sent = json.loads("{" + chunk.columns_json + "}")
    assert sent["metrics"] == ["rpm", "temp_c", "flow"]
    assert sent["values"] == [[1.0, 2.0, None], [4.0, 3.0, None], [None, None, 5.0]]
    assert readings_of(sent) == [r.to_json() for r in rs]


def test_pack_requests_keeps_each_request_within_limits():
    chunks = [
        chunk_device(d, readings(d, n), max_rows=50, max_bytes=1 << 20)[0]
        for d, n in [("a", 30), ("b", 15), ("c", 10), ("d", 50), ("e", 1)]
    ]
    packed = pack_requests(chunks, {}, max_rows=50, max_bytes=1 << 20)
    assert [[c.device_id for c in req] for req in packed] == [["a", "b"], ["c"], ["d"], ["e"]]
    assert all(sum(len(c.readings) for c in req) <= 50 for req in packed)


def test_build_body_is_the_scoring_contract():
    [chunk] = chunk_device("a", readings("a", 1), max_rows=10, max_bytes=1 << 20)
    assert json.loads(build_body([chunk], {"a": '{"seen":3}'})) == {
        "contract": 2,
        "devices": [
            {
                "device_id": "a",
                "state": {"seen": 3},
                "timestamps": ["2026-11-27T06:00:00.000Z"],
                "metrics": ["rpm"],
                "values": [[1500.0]],
            }
        ],
    }


def test_score_every_device_in_exactly_one_request_per_round(aml, make_batcher):
    devices = {f"d{i}": readings(f"d{i}", 7) for i in range(40)}
    outcome = make_batcher(max_rows=50).score(devices, {d: None for d in devices})
    assert outcome.rejected == []
    assert sorted(outcome.results) == sorted(devices)
    assert all(len(outcome.results[d].predictions) == 7 for d in devices)
    seen = [d["device_id"] for req in aml.record.requests for d in req["devices"]]
    assert sorted(seen) == sorted(devices)  # no device twice
    assert all(
        sum(len(readings_of(d)) for d in req["devices"]) <= 50 for req in aml.record.requests
    )
    assert outcome.model_version == "toy-1"


def test_score_passes_state_between_rounds_in_time_order(aml, make_batcher):
    rs = readings("big", 25)
    outcome = make_batcher(max_rows=10).score({"big": rs}, {"big": {"seen": 100}})
    result = outcome.results["big"]
    assert [p.timestamp for p in result.predictions] == [r.timestamp for r in rs]
    assert result.state == {"seen": 125}
    assert [req["devices"][0]["state"] for req in aml.record.requests] == [
        {"seen": 100},
        {"seen": 110},
        {"seen": 120},
    ]
    assert outcome.requests == 3


def test_score_isolates_a_refused_device_by_splitting(aml, make_batcher):
    aml.script.poison_devices = {"d5"}
    devices = {f"d{i}": readings(f"d{i}", 3) for i in range(8)}
    outcome = make_batcher(max_rows=100).score(devices, {})
    assert [(r.device_id, len(r.readings)) for r in outcome.rejected] == [("d5", 3)]
    assert "model refused" in outcome.rejected[0].reason
    assert sorted(outcome.results) == sorted(set(devices) - {"d5"})
    # one request of 8, then halves down to the culprit: 8 -> 4+4 -> 2+2 -> 1+1
    assert aml.record.statuses.count(400) == 4


def test_score_rejects_a_device_the_model_answers_wrongly(aml, make_batcher):
    def model(req):
        from tests.support.aml_standin import toy_model

        out = toy_model(req)
        for d in out["devices"]:
            if d["device_id"] == "liar":
                d["predictions"] = d["predictions"][:-1]
        return out

    aml.script.model = model
    outcome = make_batcher().score({"liar": readings("liar", 3), "ok": readings("ok", 3)}, {})
    assert [r.device_id for r in outcome.rejected] == ["liar"]
    assert outcome.rejected[0].reason.startswith(
        "invalid model response: predictions.timestamp: must be an array of 3 values; "
    )
    assert list(outcome.results) == ["ok"]


def test_score_bounds_requests_in_flight(aml, make_batcher):
    hold = threading.Event()
    aml.script.hold = hold
    batcher = make_batcher(max_rows=5, max_concurrency=3)
    devices = {f"d{i}": readings(f"d{i}", 5) for i in range(12)}
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(out=batcher.score(devices, {})))
    t.start()
    assert wait_until(lambda: aml.record.in_flight >= 3, timeout=5)
    assert not wait_until(lambda: aml.record.in_flight > 3, timeout=0.2)
    hold.set()
    t.join(10)
    assert aml.record.peak_in_flight == 3
    assert len(result["out"].results) == 12


def test_score_raises_transient_past_the_deadline_and_returns_nothing(aml, make_batcher):
    aml.script.faults += [(503, {}, b"")] * 100
    with pytest.raises(TransientError):
        make_batcher(retry_deadline=30).score({"a": readings("a", 2)}, {})


def test_score_config_error_is_not_dead_lettering(aml, make_batcher):
    aml.script.faults.append((401, {}, b""))
    with pytest.raises(EndpointConfigError):
        make_batcher().score({"a": readings("a", 2), "b": readings("b", 2)}, {})


def test_score_keeps_requests_within_max_bytes_when_the_state_grows(aml, make_batcher):
    def model(req):
        from tests.support.aml_standin import toy_model

        out = toy_model(req)
        for d in out["devices"]:
            d["state"]["history"] = "h" * 3000
        return out

    aml.script.model = model
    batcher = make_batcher(max_bytes=8192)
    outcome = batcher.score({"a": readings("a", 600)}, {"a": None})
    assert len(outcome.results["a"].predictions) == 600
    sizes = [len(json.dumps(req, separators=(",", ":"))) for req in aml.record.requests]
    assert len(sizes) > 2
    assert max(sizes) <= 8192


def test_predictions_over_the_table_limits_are_rejected_at_the_boundary(aml, make_batcher):
    def model(req):
        from tests.support.aml_standin import toy_model

        out = toy_model(req)
        for d in out["devices"]:
            if d["device_id"] == "wide":
                d["predictions"][0].update({f"h{i}": float(i) for i in range(201)})
            if d["device_id"] == "fat":
                d["state"]["blob"] = "x" * (256 * 1024)
        return out

    aml.script.model = model
    outcome = make_batcher().score(
        {"wide": readings("wide", 1), "fat": readings("fat", 1), "ok": readings("ok", 1)}, {}
    )
    reasons = {r.device_id: r.reason for r in outcome.rejected}
    assert reasons == {
        "wide": "invalid model response: predictions[0]: more than 200 extra fields",
        "fat": "invalid model response: state: 262164 characters of JSON; at most 262144",
    }
    assert list(outcome.results) == ["ok"]


def test_a_big_round_is_spread_over_the_workers_in_requests_of_about_equal_rows(aml, make_batcher):
    devices = {f"d{i:02d}": readings(f"d{i:02d}", 50) for i in range(40)}  # 2,000 rows
    outcome = make_batcher(max_rows=2000, max_concurrency=4, split_rows=500).score(
        devices, {d: None for d in devices}
    )
    assert sorted(outcome.results) == sorted(devices)
    assert outcome.requests == 4
    sizes = [sum(len(readings_of(d)) for d in req["devices"]) for req in aml.record.requests]
    assert sorted(sizes) == [500, 500, 500, 500]
    seen = [d["device_id"] for req in aml.record.requests for d in req["devices"]]
    assert sorted(seen) == sorted(devices)  # every device once


def test_a_small_round_stays_one_request(aml, make_batcher):
    devices = {f"d{i}": readings(f"d{i}", 10) for i in range(20)}  # 200 rows
    outcome = make_batcher(max_rows=2000, max_concurrency=4, split_rows=500).score(devices, {})
    assert outcome.requests == 1


def test_chunk_sizes_count_utf8_bytes_of_non_ascii_metric_names():
    name = "température_" + "é" * 20
    rs = readings("a", 3, **{name: 1.5})
    [chunk] = chunk_device("a", rs, max_rows=10, max_bytes=1 << 20)
    assert not chunk.columns_json.isascii()
    assert chunk.size == len(chunk.columns_json.encode())
    [one] = chunk_device("a", rs[:1], max_rows=10, max_bytes=1 << 20)
    [two] = chunk_device("a", rs[:2], max_rows=10, max_bytes=1 << 20)
    assert len(one.columns_json) < one.size - 20  # far fewer characters than bytes
    # Room for two readings counted in bytes (with a byte to spare for the commas): not three.
    chunks = chunk_device("a", rs, max_rows=10, max_bytes=two.size + 2 + 32 + 32 + 1)
    assert [len(c.readings) for c in chunks] == [2, 1]
    assert all(len(build_body([c], {})) <= two.size + 2 + 32 + 32 + 1 for c in chunks)
