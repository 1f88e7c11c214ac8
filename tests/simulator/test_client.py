"""IngestClient against a scriptable ingest server in the test and the real ingest function."""

from __future__ import annotations

import json
import random
import re
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import ingest_function
from local.host.http import HttpHost
from shared.errors import TransientError
from shared.publisher import InMemoryPublisher
from shared.wiring import IngestApp
from simulator.client import IngestClient, corrupt_reading
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
KEY = "sim-test-key"
_METRIC = re.compile(r"[a-z][a-z0-9_]{0,39}")


# --- a scriptable ingest server -----------------------------------------------------------------


def is_valid(reading: object) -> bool:
    """The ingest's rules, enough of them to tell the client's corruptions apart."""
    if not isinstance(reading, dict) or not isinstance(reading.get("device_id"), str):
        return False
    try:
        datetime.fromisoformat(reading["timestamp"].replace("Z", "+00:00"))
    except (KeyError, AttributeError, ValueError):
        return False
    metrics = reading.get("metrics")
    return isinstance(metrics, dict) and all(
        _METRIC.fullmatch(k) and type(v) in (int, float) for k, v in metrics.items()
    )


class FakeIngest:
    """Answers from a script (`"429"`, `"503"`, `"drop"` = accept then hang up), then 202s.

    `stored` counts every identity the server accepted, so a resend shows up as a count of 2.
    """

    def __init__(
        self, script: list[str] | None = None, key: str = KEY, *, retry_after: str = "0.01"
    ) -> None:
        self.script = list(script or [])
        self.key = key
        self.retry_after = retry_after
        self.stored: Counter[tuple[str, str]] = Counter()
        self.requests = 0
        self.largest = 0
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with fake.lock:
                    fake.requests += 1
                    fake.largest = max(fake.largest, len(body))
                    action = fake.script.pop(0) if fake.script else "accept"
                if self.headers.get("x-functions-key") != fake.key:
                    return self.answer(401, b"")
                if action in ("429", "503"):
                    return self.answer(int(action), b"{}", {"Retry-After": fake.retry_after})
                readings = json.loads(body)["readings"]
                if not all(is_valid(r) for r in readings):
                    return self.answer(400, b'{"error": "validation"}')
                with fake.lock:
                    fake.stored.update((r["device_id"], r["timestamp"]) for r in readings)
                if action == "drop":
                    self.close_connection = True
                    return None
                return self.answer(202, json.dumps({"accepted": len(readings)}).encode())

            def answer(self, status: int, body: bytes, headers: dict | None = None) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/readings"

    def manifest(self) -> dict:
        devices: dict[str, list[str]] = {}
        for device, ts in self.stored:
            devices.setdefault(device, []).append(ts)
        per = {
            d: {"accepted": len(s), "first": min(s), "last": max(s)}
            for d, s in sorted(devices.items())
        }
        return {"accepted": len(self.stored), "devices": per}

    def __enter__(self) -> FakeIngest:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.thread.join(5)
        self.server.server_close()


def make_readings(devices: int, steps: int, *, end: datetime | None = None) -> list[dict]:
    """`devices` × `steps` valid readings, 10 s apart, ending a minute before `end` (now)."""
    end = (end or datetime.now(UTC)) - timedelta(minutes=1)
    out = []
    for step in range(steps):
        ts = end - timedelta(seconds=10 * (steps - step))
        stamp = ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"
        for d in range(devices):
            out.append(
                {
                    "device_id": f"pump-{d:04d}",
                    "timestamp": stamp,
                    "metrics": {"temperature_c": 60.0 + d, "rpm": 1450.0 + step},
                }
            )
    return out


class FakeClock:
    """Monotonic time that only moves when someone sleeps: rates become exact arithmetic."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.slept.append(seconds)
            self.now += seconds


@pytest.fixture
def fake_ingest(request) -> Iterator[FakeIngest]:
    marker = request.node.get_closest_marker("script")
    with FakeIngest(marker.args[0] if marker else None) as server:
        yield server


def client_for(url: str, **kwargs) -> IngestClient:
    kwargs.setdefault("backoff", (0.001, 0.01))
    kwargs.setdefault("timeout", 5.0)
    return IngestClient(url, KEY, **kwargs)


# --- the fake server ----------------------------------------------------------------------------


def test_client_sends_batches_and_manifest_equals_server(fake_ingest):
    readings = make_readings(7, 30)
    with client_for(fake_ingest.url, batch_size=50, max_connections=3) as client:
        client.submit(readings)
        client.flush()
        stats = client.stats()
        assert client.manifest() == fake_ingest.manifest()
    assert (stats.submitted, stats.accepted, stats.requests, stats.retries) == (210, 210, 5, 0)
    assert stats.ok
    assert stats.p99_ms >= stats.p50_ms > 0
    assert set(fake_ingest.stored.values()) == {1}


def test_client_gathers_small_submits_into_full_batches(fake_ingest):
    clock = FakeClock()
    readings = make_readings(10, 20)
    with client_for(fake_ingest.url, batch_size=50, clock=clock, sleep=clock.sleep) as client:
        for start in range(0, 200, 10):  # twenty steps of ten devices
            client.submit(readings[start : start + 10])
        client.flush()
        stats = client.stats()
    assert (stats.requests, stats.accepted) == (4, 200)


def test_client_sends_a_lingering_partial_batch_on_poll(fake_ingest):
    clock = FakeClock()
    with client_for(
        fake_ingest.url, batch_size=50, linger_s=0.5, clock=clock, sleep=clock.sleep
    ) as client:
        client.submit(make_readings(3, 1))
        client.poll()
        assert fake_ingest.requests == 0  # still waiting for company
        clock.sleep(0.5)
        client.poll()
        assert wait_until(lambda: client.stats().accepted == 3)
        client.flush()


def test_client_retries_429_and_503_honouring_retry_after():
    with FakeIngest(["429", "503", "429"]) as server:
        clock = FakeClock()
        with client_for(
            server.url, batch_size=100, max_connections=1, clock=clock, sleep=clock.sleep
        ) as client:
            client.submit(make_readings(2, 50))
            client.flush()
            stats = client.stats()
    assert (stats.accepted, stats.retries, stats.requests, stats.failed) == (100, 3, 4, 0)
    assert all(s >= 0.01 for s in clock.slept)  # Retry-After is a floor under the jitter
    assert stats.ok


def test_client_lost_ack_is_resent_and_counted_once(tmp_path):
    with FakeIngest(["drop", "accept", "drop"]) as server:
        with client_for(server.url, batch_size=40, max_connections=1) as client:
            client.submit(make_readings(4, 20))
            client.flush()
            stats = client.stats()
            client.write_manifest(tmp_path / "out" / "manifest.json")
        stored = server.manifest()
    assert (stats.accepted, stats.retries, stats.failed) == (80, 2, 0)
    assert stats.duplicate_acks == 0  # the lost acks were never counted, so nothing doubled
    assert json.loads((tmp_path / "out" / "manifest.json").read_text()) == stored
    assert stored["accepted"] == 80
    assert max(server.stored.values()) == 2  # the server did see the resend: idempotent by id
    assert stats.ok


def test_client_same_identity_submitted_twice_is_accepted_once(fake_ingest):
    readings = make_readings(3, 2)
    with client_for(fake_ingest.url, batch_size=4) as client:
        client.submit(readings + readings[:2])
        client.flush()
        stats = client.stats()
        identities = client.accepted_identities()
    assert (stats.submitted, stats.accepted, stats.duplicate_acks) == (8, 6, 2)
    assert identities == set(fake_ingest.stored)
    assert stats.ok


def test_client_gives_up_after_max_retries_and_reports_failure():
    with FakeIngest(["503"] * 10) as server:
        clock = FakeClock()
        with client_for(
            server.url, max_retries=3, max_connections=1, clock=clock, sleep=clock.sleep
        ) as client:
            client.submit(make_readings(1, 10))
            client.flush()
            stats = client.stats()
    assert (stats.accepted, stats.failed, stats.retries, stats.requests) == (0, 10, 3, 4)
    assert not stats.ok


def test_client_cancel_cuts_a_long_retry_after_short_and_counts_unsent_as_failed():
    with FakeIngest(["503"] * 100, retry_after="300") as server:
        client = client_for(server.url, batch_size=5, max_connections=2, max_retries=8)
        client.submit(make_readings(1, 12))  # two full batches go out now, two readings wait
        assert wait_until(lambda: server.requests == 2)  # both answered 503, both backing off
        flushing = threading.Thread(target=client.flush)
        flushing.start()
        client.cancel()
        flushing.join(timeout=5)
        assert not flushing.is_alive()  # not the 300 s Retry-After
        client.submit(make_readings(2, 1))  # after cancel nothing more goes out
        client.flush()
        client.close()
        stats = client.stats()
    assert server.requests == 2  # no attempt after the cancel
    assert (stats.submitted, stats.failed, stats.accepted, stats.retries) == (14, 14, 0, 0)
    assert (stats.fatal, client.fatal, client.cancelled) == (None, None, True)
    assert not stats.ok


def test_client_connection_refused_is_retried_then_failed():
    with FakeIngest() as server:
        url = server.url
    clock = FakeClock()
    with client_for(url, max_retries=2, clock=clock, sleep=clock.sleep) as client:
        client.submit(make_readings(1, 3))
        client.flush()
        stats = client.stats()
    assert (stats.failed, stats.retries, stats.accepted, stats.fatal) == (3, 2, 0, None)


def test_client_wrong_key_is_fatal_and_stops_sending():
    with (
        FakeIngest(key="other") as server,
        client_for(server.url, batch_size=10, max_connections=1) as client,
    ):
        client.submit(make_readings(5, 10))
        client.flush()
        stats = client.stats()
    assert "401" in str(stats.fatal)
    assert "--key" in str(stats.fatal)
    assert stats.retries == 0
    assert stats.requests < 5  # batches after the 401 were never sent
    assert (stats.accepted, stats.failed) == (0, 50)


def test_client_bad_fraction_sends_bad_readings_apart_and_counts_them_rejected(fake_ingest):
    readings = make_readings(10, 40)
    with client_for(
        fake_ingest.url, batch_size=25, bad_fraction=0.2, rng=random.Random(3)
    ) as client:
        client.submit(readings)
        client.flush()
        stats = client.stats()
        accepted = client.accepted_identities()
    assert 40 <= stats.bad_rejected <= 120
    assert stats.accepted + stats.bad_rejected == 400
    assert (stats.rejected, stats.bad_accepted, stats.failed) == (0, 0, 0)
    assert accepted == set(fake_ingest.stored)
    assert stats.ok


def test_corrupt_reading_breaks_each_rule():
    good = make_readings(1, 1)[0]
    kinds = ["non_numeric", "nan_string", "missing_device_id", "bad_timestamp", "upper_metric"]
    assert [is_valid(corrupt_reading(good, k)) for k in kinds] == [False] * 5
    assert is_valid(good)
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt_reading(good, "sideways")


def test_client_splits_bodies_over_one_mib(fake_ingest):
    big = {f"metric_{i:02d}": 0.1234567890123456 + i for i in range(32)}
    readings = [dict(r, metrics=big) for r in make_readings(40, 100)]  # ~3.8 MiB in all
    with client_for(fake_ingest.url, batch_size=5000) as client:
        client.submit(readings)
        client.flush()
        stats = client.stats()
    assert stats.accepted == 4000
    assert stats.requests >= 4
    assert fake_ingest.largest <= 1024 * 1024


def test_client_rate_is_held_with_a_fake_clock(fake_ingest):
    clock = FakeClock()
    with client_for(
        fake_ingest.url, batch_size=100, rate=1000.0, clock=clock, sleep=clock.sleep
    ) as c:
        c.submit(make_readings(50, 100))
        c.flush()
        stats = c.stats()
    assert stats.accepted == 5000
    assert stats.rate == pytest.approx(1000.0, rel=0.10)


def test_client_rate_is_held_in_real_time(fake_ingest):
    with client_for(fake_ingest.url, batch_size=50, rate=1500.0) as client:
        client.submit(make_readings(30, 80))  # 2,400 readings: about 1.6 s
        client.flush()
        stats = client.stats()
    assert stats.accepted == 2400
    assert stats.rate == pytest.approx(1500.0, rel=0.10)


# --- the real ingest function behind the local Functions host -----------------------------------


@pytest.fixture
def hub(monkeypatch) -> InMemoryPublisher:
    publisher = InMemoryPublisher()
    monkeypatch.setattr(ingest_function, "_app", IngestApp(publisher))
    return publisher


@pytest.fixture
def ingest_host() -> Iterator[HttpHost]:
    with HttpHost(ROOT, keys=[KEY], port=0) as host:
        yield host


def test_client_against_real_ingest_function(ingest_host, hub):
    readings = make_readings(12, 25)
    with client_for(f"{ingest_host.url}/api/readings", batch_size=64) as client:
        client.submit(readings)
        client.flush()
        stats = client.stats()
        manifest = client.manifest()
    assert (stats.accepted, stats.requests, stats.rejected, stats.failed) == (300, 5, 0, 0)
    published = [r for e in hub.events for r in json.loads(e.body)["readings"]]
    assert len(published) == 300
    assert (manifest["accepted"], len(manifest["devices"])) == (300, 12)


def test_client_real_ingest_rejects_bad_fraction(ingest_host, hub):
    with client_for(
        f"{ingest_host.url}/api/readings", bad_fraction=0.3, rng=random.Random(1)
    ) as client:
        client.submit(make_readings(10, 20))
        client.flush()
        stats = client.stats()
    published = sum(len(json.loads(e.body)["readings"]) for e in hub.events)
    assert stats.bad_rejected > 0
    assert (stats.accepted, stats.bad_accepted, stats.rejected) == (published, 0, 0)
    assert stats.accepted + stats.bad_rejected == 200


class FlakyHub(InMemoryPublisher):
    """Event Hubs that cannot be reached for the first `failures` publishes."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def publish(self, events):
        if self.failures > 0:
            self.failures -= 1
            raise TransientError("hub unreachable", retry_after=7)
        return super().publish(events)


def test_client_real_ingest_503_is_retried_after_its_retry_after(ingest_host, monkeypatch):
    flaky = FlakyHub(failures=2)
    monkeypatch.setattr(ingest_function, "_app", IngestApp(flaky))
    clock = FakeClock()
    with client_for(
        f"{ingest_host.url}/api/readings", max_connections=1, clock=clock, sleep=clock.sleep
    ) as client:
        client.submit(make_readings(5, 10))
        client.flush()
        stats = client.stats()
    assert (stats.accepted, stats.retries, stats.failed) == (50, 2, 0)
    assert clock.slept == [7.0, 7.0]  # the ingest's Retry-After, not the shorter jitter
    assert sum(e.properties["count"] for e in flaky.events) == 50


def test_client_real_ingest_wrong_key_is_fatal_401(ingest_host, hub):
    url = f"{ingest_host.url}/api/readings"
    with IngestClient(url, "wrong-key", max_connections=1, timeout=5.0) as client:
        client.submit(make_readings(3, 3))
        client.flush()
        stats = client.stats()
    assert "HTTP 401" in str(stats.fatal)
    assert (stats.accepted, stats.failed) == (0, 9)
    assert hub.events == []
