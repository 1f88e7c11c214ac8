"""What the live page shows, kept up to date in memory as rows arrive.

`FleetView` is plain Python: it folds `DeviceAggregates` and `Anomalies` rows (from any dataset)
into the figures of the page and answers a JSON-ready snapshot. `Hub` counts changes and wakes
the server-sent-event streams waiting for one.

The push rows carry per-window summaries (anomaly scores, failure probability, readings
counted), not raw sensor metrics, so the window chart plots those; raw metrics stay in Table
Storage, as they would with the real Power BI, and the page's readings chart fetches them
through the query function (`dashboard.history`).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from .store import StoredRow

__all__ = ["AGGREGATES", "ANOMALIES", "RISK_THRESHOLD", "FleetView", "Hub"]

AGGREGATES, ANOMALIES = "DeviceAggregates", "Anomalies"
RISK_THRESHOLD = 0.5
"""A device is at risk when its latest window is maintenance_due or its failure
probability is at least this."""

_FEED, _FLEET_SHOWN, _ANOMALY_WINDOW, _WINDOWS_KEPT = 50, 200, 300.0, 8


def at_risk(row: dict[str, Any]) -> bool:
    """Whether a device's latest aggregate row puts it at risk."""
    fp = row.get("failure_probability")
    number = isinstance(fp, int | float) and not isinstance(fp, bool)
    return row.get("maintenance_due") is True or (number and fp >= RISK_THRESHOLD)


def _risk_key(row: dict[str, Any]) -> tuple[int, float, float]:
    fp = row.get("failure_probability")
    fp = fp if isinstance(fp, int | float) and not isinstance(fp, bool) else -1.0
    score = row.get("max_anomaly_score")
    score = score if isinstance(score, int | float) else 0.0
    return (int(at_risk(row)), float(fp), float(score))


class FleetView:
    """The page's figures, folded from rows in arrival order.

    Args:
        interval_seconds: the aggregation interval of `DeviceAggregates` rows (the sink's
            POWERBI_INTERVAL_SECONDS): readings/s is the newest window's readings over it.
    """

    def __init__(self, *, interval_seconds: float = 60.0) -> None:
        self.interval = interval_seconds
        self.version = 0
        self._latest: dict[str, dict[str, Any]] = {}
        self._windows: dict[str, int] = {}
        self._feed: deque[dict[str, Any]] = deque(maxlen=_FEED)
        self._anomaly_times: deque[float] = deque()
        self._lock = threading.Lock()

    def add(self, table: str, rows: Iterable[StoredRow]) -> None:
        """Fold newly stored rows of `table` in; other tables are ignored."""
        with self._lock:
            for stored in rows:
                if table == AGGREGATES:
                    self._add_aggregate(stored.row)
                elif table == ANOMALIES:
                    self._feed.appendleft({**stored.row, "received": stored.received})
                    self._anomaly_times.append(stored.received)
            self.version += 1

    def snapshot(self, now: float) -> dict[str, Any]:
        """KPIs, the fleet sorted by failure risk (the riskiest 200) and the anomaly feed."""
        with self._lock:
            while self._anomaly_times and self._anomaly_times[0] < now - _ANOMALY_WINDOW:
                self._anomaly_times.popleft()
            fleet = sorted(self._latest.values(), key=_risk_key, reverse=True)
            newest = max(self._windows, default=None)
            readings = self._windows[newest] if newest else 0
            return {
                "version": self.version,
                "kpis": {
                    "readings_per_second": round(readings / self.interval, 3),
                    "anomalies_5min": len(self._anomaly_times),
                    "devices_at_risk": sum(1 for row in fleet if at_risk(row)),
                    "devices": len(fleet),
                    "window_start": newest,
                },
                "fleet": [{**row, "at_risk": at_risk(row)} for row in fleet[:_FLEET_SHOWN]],
                "anomalies": list(self._feed),
            }

    def newest_reading(self, device: str) -> str | None:
        """The `last_timestamp` of the device's latest window: where its history ends, roughly."""
        with self._lock:
            value = self._latest.get(device, {}).get("last_timestamp")
        return value if isinstance(value, str) else None

    def _add_aggregate(self, row: dict[str, Any]) -> None:
        device, window = row.get("device_id"), row.get("window_start")
        if not isinstance(device, str) or not isinstance(window, str):
            return
        known = self._latest.get(device)
        if known is None or str(known.get("window_start")) <= window:
            self._latest[device] = row
        readings = row.get("readings")
        if isinstance(readings, int) and not isinstance(readings, bool):
            self._windows[window] = self._windows.get(window, 0) + readings
            while len(self._windows) > _WINDOWS_KEPT:
                del self._windows[min(self._windows)]


class Hub:
    """Change notification for the event streams: a version counter and a condition."""

    def __init__(self) -> None:
        self.version = 0
        self.closed = False
        self._changed = threading.Condition()

    def notify(self) -> None:
        """Something changed: wake every waiting stream."""
        with self._changed:
            self.version += 1
            self._changed.notify_all()

    def wait(self, seen: int, timeout: float) -> int:
        """Block until the version passes `seen`, the hub closes, or `timeout` passes."""
        with self._changed:
            self._changed.wait_for(lambda: self.version != seen or self.closed, timeout)
            return self.version

    def pause(self, seconds: float) -> None:
        """Wait `seconds` unless the hub closes first (streams coalesce bursts of changes)."""
        with self._changed:
            self._changed.wait_for(lambda: self.closed, seconds)

    def close(self) -> None:
        """Release every stream (the server is stopping)."""
        with self._changed:
            self.closed = True
            self._changed.notify_all()


def series(rows: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """Columns for the device chart from its aggregate rows, ordered by window start."""
    ordered = sorted(
        (r for r in rows if isinstance(r.get("window_start"), str)), key=lambda r: r["window_start"]
    )
    names = ("mean_anomaly_score", "max_anomaly_score", "failure_probability", "readings")
    return {
        "window_start": [r["window_start"] for r in ordered],
        **{name: [r.get(name) for r in ordered] for name in names},
    }
