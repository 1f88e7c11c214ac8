"""The online loop with a small fake fleet of its own (the real physics may not be there)."""

from __future__ import annotations

import io
import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import ingest_function
import tests.simulator.test_client as support
from local.host.http import HttpHost
from shared.publisher import InMemoryPublisher
from shared.wiring import IngestApp
from simulator.client import IngestClient
from simulator.run import (
    EXIT_FAILED,
    EXIT_FATAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    format_progress,
    plan_start,
    run,
)

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Config:
    interval_s: float = 10.0


class FakeFleet:
    """Follows the Fleet interface: `now`, `step()`, `drain_truth()`, `config.interval_s`."""

    def __init__(self, devices: int, *, start: datetime, interval_s: float = 10.0) -> None:
        self.config = Config(interval_s)
        self.device_ids = [f"fan-{i:04d}" for i in range(devices)]
        self.start = start
        self.steps = 0
        self.truth: list[dict] = []

    @property
    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.config.interval_s * self.steps)

    def step(self) -> list[dict]:
        ts = self.now.astimezone(UTC)
        stamp = ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"
        self.steps += 1
        if self.steps % 10 == 0:
            self.truth.append({"type": "spike", "device_id": self.device_ids[0], "time": stamp})
        return [
            {"device_id": d, "timestamp": stamp, "metrics": {"rpm": 1000.0 + self.steps}}
            for d in self.device_ids
        ]

    def drain_truth(self) -> list[dict]:
        out, self.truth = self.truth, []
        return out


class ListSink:
    def __init__(self) -> None:
        self.records: list[dict] = []

    def write(self, records: list[dict]) -> None:
        self.records.extend(records)


def fake_client(url: str, clock: support.FakeClock | None = None, **kwargs) -> IngestClient:
    if clock is not None:
        kwargs.update(clock=clock, sleep=clock.sleep)
    return support.client_for(url, **kwargs)


def test_run_steps_on_schedule_and_everything_is_confirmed():
    now = datetime.now(UTC)
    clock = support.FakeClock()
    fleet = FakeFleet(5, start=plan_start(now, speed=60, duration_s=10))
    sink, out = ListSink(), io.StringIO()
    with support.FakeIngest() as server, fake_client(server.url, clock) as client:
        code = run(
            fleet,
            client,
            speed=60,
            duration_s=10,
            truth=sink,
            progress=out,
            clock=clock,
            sleep=clock.sleep,
        )
        manifest = client.manifest()
    assert code == EXIT_OK
    assert fleet.steps == 60  # 600 simulated seconds of 10 s steps
    assert clock.now - 1000.0 == pytest.approx(59 / 6)  # step k is due at k × 10/60 s
    assert manifest == server.manifest()
    assert manifest["accepted"] == 300
    assert [r["type"] for r in sink.records] == ["spike"] * 6
    assert fleet.now == pytest.approx(now + timedelta(seconds=10), abs=timedelta(seconds=1))
    text = out.getvalue()
    assert "\r" not in text  # not a terminal: plain lines a log can be read by
    assert "accepted 300" in text
    assert text.rstrip().endswith("ok: every reading sent was confirmed")


def test_run_ends_between_steps_when_stop_is_set_and_keeps_what_was_accepted():
    now = datetime.now(UTC)
    clock = support.FakeClock()
    fleet = FakeFleet(5, start=plan_start(now, speed=60, duration_s=10))
    stop = threading.Event()

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if fleet.steps == 12:
            stop.set()  # what the demo's Ctrl-C handler does, mid-wait

    with support.FakeIngest() as server, fake_client(server.url, clock) as client:
        code = run(
            fleet,
            client,
            speed=60,
            duration_s=10,
            progress=None,
            clock=clock,
            sleep=sleep,
            stop=stop,
        )
        manifest = client.manifest()
    assert code == EXIT_INTERRUPTED
    assert fleet.steps == 12  # no step after the stop
    assert manifest["accepted"] == 60  # flushed: every reading of those steps answered
    assert manifest == server.manifest()


class TerminalSink(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_run_rewrites_one_progress_line_on_a_terminal():
    now = datetime.now(UTC)
    clock = support.FakeClock()
    fleet = FakeFleet(5, start=plan_start(now, speed=60, duration_s=10))
    out = TerminalSink()
    with support.FakeIngest() as server, fake_client(server.url, clock) as client:
        code = run(
            fleet,
            client,
            speed=60,
            duration_s=10,
            truth=ListSink(),
            progress=out,
            clock=clock,
            sleep=clock.sleep,
        )
    assert code == EXIT_OK
    text = out.getvalue()
    assert text.count("\r") >= 2
    assert text.count("\n") == 5  # only the final progress line and the summary end lines


def test_run_stops_on_a_fatal_answer():
    clock = support.FakeClock()
    fleet = FakeFleet(3, start=datetime.now(UTC) - timedelta(hours=1))
    with (
        support.FakeIngest(key="other") as server,
        fake_client(server.url, clock, max_connections=1) as client,
    ):
        code = run(
            fleet, client, speed=10, duration_s=100, progress=None, clock=clock, sleep=clock.sleep
        )
        stats = client.stats()
    assert code == EXIT_FATAL
    assert fleet.steps < 100
    assert "HTTP 401" in str(stats.fatal)


def test_run_reports_readings_given_up_on():
    clock = support.FakeClock()
    fleet = FakeFleet(2, start=datetime.now(UTC) - timedelta(hours=1))
    out = io.StringIO()
    with (
        support.FakeIngest(["503"] * 4) as server,
        fake_client(server.url, clock, max_retries=1, max_connections=1) as client,
    ):
        code = run(
            fleet, client, speed=10, duration_s=3, progress=out, clock=clock, sleep=clock.sleep
        )
    assert code == EXIT_FAILED
    assert "gave up on 4" in out.getvalue()
    assert "NOT OK" in out.getvalue()


def test_run_bad_fraction_is_still_ok():
    clock = support.FakeClock()
    fleet = FakeFleet(10, start=datetime.now(UTC) - timedelta(hours=1))
    with (
        support.FakeIngest() as server,
        fake_client(server.url, clock, bad_fraction=0.25) as client,
    ):
        code = run(
            fleet, client, speed=100, duration_s=2, progress=None, clock=clock, sleep=clock.sleep
        )
        stats = client.stats()
        accepted = client.accepted_identities()
    assert code == EXIT_OK
    assert stats.bad_rejected > 0
    assert stats.accepted + stats.bad_rejected == 200
    assert accepted == set(server.stored)


def test_plan_start_ends_the_simulated_clock_at_real_time():
    now = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
    assert plan_start(now, speed=60, duration_s=300) == now - timedelta(seconds=300 * 59)
    assert plan_start(now, speed=1, duration_s=300) == now


def test_plan_start_refuses_beyond_seven_days_and_says_what_fits():
    now = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="older than 7 days") as err:
        plan_start(now, speed=3600, duration_s=3600)
    assert "--speed 168 or less" in str(err.value)
    assert "--duration 167 or less" in str(err.value)
    with pytest.raises(ValueError, match="--speed must be >= 1"):
        plan_start(now, speed=0.5, duration_s=10)


def test_format_progress_is_one_line():
    clock = support.FakeClock()
    with support.FakeIngest() as server, fake_client(server.url, clock) as client:
        line = format_progress(datetime(2026, 11, 27, 7, tzinfo=UTC), client.stats())
    assert "\n" not in line
    assert line.startswith("sim 2026-11-27 07:00:00Z")
    assert "p99" in line


def test_run_against_real_ingest_in_real_time(monkeypatch):
    hub = InMemoryPublisher()
    monkeypatch.setattr(ingest_function, "_app", IngestApp(hub))
    now = datetime.now(UTC)
    fleet = FakeFleet(20, start=plan_start(now, speed=600, duration_s=1.0))
    with (
        HttpHost(ROOT, keys=[support.KEY], port=0) as host,
        support.client_for(f"{host.url}/api/readings", batch_size=100) as client,
    ):
        code = run(fleet, client, speed=600, duration_s=1.0, progress=None)
        stats = client.stats()
    published = [json.loads(e.body)["readings"] for e in hub.events]
    assert code == EXIT_OK
    assert fleet.steps == 60
    assert stats.accepted == 1200 == sum(map(len, published))
    assert stats.rejected == 0  # every timestamp fell inside the ingest's window
