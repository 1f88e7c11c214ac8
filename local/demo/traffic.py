"""The simulated fleet, sending through the ingest function, with each reading's accept time.

The simulator runs in this process (its own `run` loop and `IngestClient`), so the demo knows
exactly which readings the ingest acknowledged, and when: a session wrapper notes the wall
clock of every 202 for the readings of that request. That is the "accepted" end of the
end-to-end latency; the ingest publishes to Event Hubs before it answers, so every reading
noted here is on the hub.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from shared.readings import parse_timestamp, row_key
from simulator.client import IngestClient
from simulator.fleet import Fleet, FleetConfig
from simulator.run import EXIT_FATAL, MAX_LOOKBACK, plan_start, run
from simulator.truth import TruthWriter

__all__ = ["AcceptLog", "FleetRun", "SendResult", "longest_duration"]

Identity = tuple[str, str]  # (device_id, Predictions RowKey)


class AcceptLog:
    """Wall-clock time of the first 202 for each reading, keyed like the Predictions table."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        """Start empty; `clock` is wall-clock seconds (Table Timestamps are wall clock too)."""
        self._clock = clock
        self._lock = threading.Lock()
        self.accepted_at: dict[Identity, float] = {}

    def note(self, body: bytes) -> None:
        """Record the readings of an acknowledged request body."""
        now = self._clock()
        readings = json.loads(body)["readings"]
        keys = [(r["device_id"], row_key(parse_timestamp(r["timestamp"]))) for r in readings]
        with self._lock:
            for key in keys:
                self.accepted_at.setdefault(key, now)

    def snapshot(self) -> dict[Identity, float]:
        """A copy of `accepted_at` taken under the lock (the client's threads write to it)."""
        with self._lock:
            return dict(self.accepted_at)

    def session_factory(self) -> requests.Session:
        """A `requests.Session` whose acknowledged POSTs are noted here."""
        accept_log = self

        class _Noting(requests.Session):
            def post(self, url: str | bytes, data: Any = None, **kwargs: Any) -> requests.Response:  # type: ignore[override]
                response = super().post(url, data=data, **kwargs)
                if response.status_code == 202 and isinstance(data, bytes):
                    accept_log.note(data)
                return response

        return _Noting()


@dataclass(frozen=True)
class SendResult:
    """What the simulator sent and what the ingest accepted."""

    exit_code: int
    sent: int
    accepted: int
    accepted_at: dict[Identity, float]
    fatal: str | None


def longest_duration(speed: float) -> float:
    """The longest run the ingest's 7-day window allows at `speed` (the simulator's rule)."""
    if speed <= 1:
        return 24 * 3600.0
    return min(24 * 3600.0, MAX_LOOKBACK.total_seconds() / (speed - 1) - 1)


class FleetRun:
    """One simulator run against the ingest function."""

    def __init__(
        self,
        url: str,
        key: str,
        *,
        devices: int,
        speed: float,
        interval_s: float,
        duration_s: float,
        seed: int = 0,
        truth: Path | None = None,
        manifest: Path | None = None,
    ) -> None:
        """Plan the run; `send()` runs it."""
        self.url, self._key = url, key
        self.devices, self.speed, self.interval_s = devices, speed, interval_s
        self.duration_s, self.seed = duration_s, seed
        self.truth, self.manifest = truth, manifest
        self.accepts = AcceptLog()

    def send(self, *, progress: Any = None, stop: threading.Event | None = None) -> SendResult:
        """Run until the duration is over, `stop` is set, or Ctrl-C (KeyboardInterrupt)."""
        start = plan_start(datetime.now(UTC), speed=self.speed, duration_s=self.duration_s)
        fleet = Fleet(
            FleetConfig(devices=self.devices, seed=self.seed, interval_s=self.interval_s),
            start=start,
        )
        truth = TruthWriter(self.truth) if self.truth is not None else None
        client = IngestClient(self.url, self._key, session_factory=self.accepts.session_factory)
        try:
            code = run(
                fleet,
                client,
                speed=self.speed,
                duration_s=self.duration_s,
                interval_s=self.interval_s,
                truth=truth,
                progress=progress,
                stop=stop,
            )
        finally:
            client.close()
            if truth is not None:
                truth.close()
        if self.manifest is not None:
            client.write_manifest(self.manifest)
        stats = client.stats()
        return SendResult(
            exit_code=code if stats.fatal is None else EXIT_FATAL,
            sent=stats.submitted,
            accepted=stats.accepted,
            accepted_at=self.accepts.snapshot(),
            fatal=stats.fatal,
        )
