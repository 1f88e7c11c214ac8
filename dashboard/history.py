"""A device's recent readings (metrics and anomaly score) from the query function, for the page.

Push rows carry per-window summaries only; each stored prediction in Table Storage carries its
reading's metrics. `/history` reads them server-side through the query function with its key
(`fleetscore.query.QueryClient`), so the key never reaches the browser.

"Recent" is in reading time: the `minutes` up to the device's newest stored reading, not up to
the wall clock, because a simulated fleet's clock runs faster and behind it (`make demo` starts
days in the past). The dashboard passes the newest reading time it knows from the push rows as a
hint; without one, a one-row newest-first query finds it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from fleetscore.query import QueryClient, QueryError

__all__ = ["MAX_MINUTES", "MAX_POINTS", "History", "HistoryError"]

MAX_POINTS = 2000
MAX_MINUTES = 7 * 24 * 60  # the ingest keeps 7 days; the query function spans at most 31
DEFAULT_MINUTES = 360
_DEVICE_ID = re.compile(r"[A-Za-z0-9_.\-]{1,64}")  # the ingest's device id rule
_AHEAD = timedelta(minutes=5)  # the ingest accepts readings up to 5 minutes in the future
_LOOKBACK = timedelta(days=7)
_MAX_SPAN = timedelta(days=31) - timedelta(minutes=1)


class HistoryError(Exception):
    """A request the dashboard answers with an error: its status, field (if any) and message."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        """Keep what the JSON error answer needs."""
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field

    def body(self) -> dict[str, Any]:
        """The answer, shaped like the push API's errors plus the offending field."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field:
            error["field"] = self.field
        return {"error": error}


def parse_params(query: Mapping[str, str]) -> tuple[str, int]:
    """(device, minutes) from `/history`'s query string; HistoryError 400 names a bad field."""
    device = query.get("device", "")
    if not _DEVICE_ID.fullmatch(device):
        raise HistoryError(
            400, "BadRequest", "device must be 1-64 characters of A-Z a-z 0-9 _ . -", "device"
        )
    raw = query.get("minutes", str(DEFAULT_MINUTES))
    if not re.fullmatch(r"[0-9]{1,6}", raw) or not 1 <= int(raw) <= MAX_MINUTES:
        raise HistoryError(
            400, "BadRequest", f"minutes must be an integer from 1 to {MAX_MINUTES}", "minutes"
        )
    return device, int(raw)


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        return None
    return ts.astimezone(UTC) if ts.tzinfo else None


class History:
    """Fetches a device's newest readings through the query function.

    Args:
        api_url: the functions root, e.g. `http://127.0.0.1:7071/api`.
        key: the function key, sent as `x-functions-key`.
        wall: the clock (tests pin it).
    """

    def __init__(
        self,
        api_url: str,
        key: str,
        *,
        timeout: float = 10.0,
        wall: Callable[[], float] | None = None,
    ) -> None:
        """Keep the connection settings; each fetch uses its own client (handler threads)."""
        self.api_url, self._key, self._timeout = api_url, key, timeout
        self._wall = wall or (lambda: datetime.now(UTC).timestamp())

    def fetch(self, device: str, minutes: int, *, newest_hint: str | None = None) -> dict[str, Any]:
        """The device's readings of the `minutes` up to its newest, oldest first (≤ MAX_POINTS).

        Raises:
            HistoryError: 502 when the query function refused or could not be reached.
        """
        now = datetime.fromtimestamp(self._wall(), UTC)
        end = now + _AHEAD
        client = QueryClient(self.api_url, self._key, timeout=self._timeout)
        try:
            anchor = _time(newest_hint)
            if anchor is None:
                probe = client.list_predictions(
                    device, start=_iso(now - _LOOKBACK), end=_iso(end), newest_first=True, limit=1
                )
                anchor = _time(probe[0].get("timestamp")) if probe else None
            items: list[dict[str, Any]] = []
            if anchor is not None:
                start = max(anchor - timedelta(minutes=minutes), end - _MAX_SPAN)
                items = client.list_predictions(
                    device, start=_iso(start), end=_iso(end), newest_first=True, limit=MAX_POINTS
                )
        except QueryError as exc:
            raise HistoryError(502, "QueryFailed", f"the query function: {exc}") from exc
        finally:
            client.close()
        return _shape(device, minutes, items)


def _shape(device: str, minutes: int, newest_first: list[dict[str, Any]]) -> dict[str, Any]:
    """Keep the `minutes` up to the newest reading, oldest first, with only what the chart needs."""
    stamped = [(t, i) for i in newest_first if (t := _time(i.get("timestamp"))) is not None]
    stamped.sort(key=lambda pair: pair[0])
    if stamped:
        since = stamped[-1][0] - timedelta(minutes=minutes)
        stamped = [(t, i) for t, i in stamped if t >= since]
    points = [
        {
            "timestamp": item["timestamp"],
            "anomaly_score": item.get("anomaly_score"),
            "metrics": item.get("metrics") if isinstance(item.get("metrics"), dict) else {},
        }
        for _, item in stamped
    ]
    names = sorted({name for p in points for name in p["metrics"]})
    return {
        "device_id": device,
        "minutes": minutes,
        "metrics": names,
        "points": points,
        "truncated": len(newest_first) >= MAX_POINTS,
    }
