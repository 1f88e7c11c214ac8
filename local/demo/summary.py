"""The end-of-run account: what was accepted against what the Predictions table holds.

Counts come from two independent places: the simulator's acknowledged readings (`AcceptLog`)
and a scan of the Predictions table. A reading is *stored* when a row with its key exists;
a *duplicate* is a row beyond the first for one reading (two rows whose reading timestamps are
the same instant) or a row for no accepted reading. Latency is the row's `Timestamp` (set by
the table service when the row was last written) minus the wall-clock time the ingest's 202
arrived: reading accepted → prediction stored, both clocks on this machine.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from azure.data.tables import TableClient

from shared.readings import parse_timestamp, row_key
from shared.store import STATE_ROW

__all__ = [
    "PredictionRow",
    "PredictionsTable",
    "Summary",
    "count_scored",
    "summarize",
    "wait_drained",
]

Identity = tuple[str, str]


@dataclass(frozen=True, slots=True)
class PredictionRow:
    """The parts of a stored prediction the summary needs."""

    device_id: str
    row_key: str
    reading_time: str
    written_at: float  # the service's Timestamp, epoch seconds
    is_anomaly: bool


class PredictionsTable:
    """Reads every prediction row (keys, reading time, Timestamp, is_anomaly).

    Each device's partition also holds its state row (RowKey `state`); it is not a prediction
    and is skipped.
    """

    def __init__(self, connection_string: str, table: str = "Predictions") -> None:
        """Connect lazily to `table`."""
        self._client = TableClient.from_connection_string(connection_string, table)

    def rows(self, *, written_since: datetime | None = None) -> list[PredictionRow]:
        """Every row, in one paged scan; or those written at or after `written_since` (UTC)."""
        out = []
        select = ["PartitionKey", "RowKey", "Timestamp", "timestamp", "is_anomaly"]
        if written_since is None:
            entities = self._client.list_entities(select=select)
        else:
            stamp = written_since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            entities = self._client.query_entities(f"Timestamp ge datetime'{stamp}'", select=select)
        for e in entities:
            if e["RowKey"] == STATE_ROW:
                continue
            out.append(
                PredictionRow(
                    device_id=e["PartitionKey"],
                    row_key=e["RowKey"],
                    reading_time=e.get("timestamp", ""),
                    written_at=e.metadata["timestamp"].timestamp(),
                    is_anomaly=bool(e.get("is_anomaly")),
                )
            )
        return out

    def close(self) -> None:
        """Close the HTTP session."""
        self._client.close()


@dataclass(frozen=True)
class Summary:
    """The figures of one run; `line()` is the machine-readable last line."""

    sent: int
    accepted: int
    scored: int | None
    stored: int
    duplicates: int
    anomalies: int
    latency_p50_s: float | None
    latency_p99_s: float | None

    @property
    def ok(self) -> bool:
        """Every accepted reading stored, exactly once."""
        return self.accepted == self.stored and self.duplicates == 0

    def line(self) -> str:
        """`SUMMARY {...}` with sent, accepted, stored, duplicates, anomalies and latency."""
        figures = asdict(self)
        del figures["scored"]
        return "SUMMARY " + json.dumps(figures, separators=(", ", ": "))

    def text(self) -> str:
        """The human-readable lines."""
        scored = "n/a" if self.scored is None else f"{self.scored:,}"
        p50, p99 = (
            "n/a" if v is None else f"{v:.2f} s" for v in (self.latency_p50_s, self.latency_p99_s)
        )
        return "\n".join(
            [
                f"  readings sent       {self.sent:,}",
                f"  accepted (202)      {self.accepted:,}",
                f"  scored              {scored} (in the rows pushed to the Power BI stand-in)",
                f"  stored              {self.stored:,} (Predictions rows of accepted readings)",
                f"  duplicates          {self.duplicates:,}",
                f"  anomalies           {self.anomalies:,}",
                f"  latency p50 / p99   {p50} / {p99} (202 received -> row Timestamp)",
                "  verdict             "
                + ("ok: every accepted reading stored exactly once" if self.ok else "NOT OK"),
            ]
        )


def summarize(
    *,
    sent: int,
    accepted_at: Mapping[Identity, float],
    rows: list[PredictionRow],
    scored: int | None = None,
) -> Summary:
    """Compare the accepted readings with the stored rows."""
    seen: set[Identity] = set()
    duplicates = 0
    latencies = []
    for row in rows:
        try:
            instant = row_key(parse_timestamp(row.reading_time))
        except Exception:  # a row without a readable reading time stands for no reading
            instant = row.row_key + "?"
        reading = (row.device_id, instant)
        if reading in seen or (row.device_id, row.row_key) not in accepted_at:
            duplicates += 1
            continue
        seen.add(reading)
        latencies.append(max(0.0, row.written_at - accepted_at[(row.device_id, row.row_key)]))
    latencies.sort()
    return Summary(
        sent=sent,
        accepted=len(accepted_at),
        scored=scored,
        stored=len(seen),
        duplicates=duplicates,
        anomalies=sum(r.is_anomaly for r in rows),
        latency_p50_s=_percentile(latencies, 0.50),
        latency_p99_s=_percentile(latencies, 0.99),
    )


def wait_drained(
    table: PredictionsTable,
    accepted: set[Identity],
    *,
    timeout: float,
    check: Callable[[], None] = lambda: None,
) -> tuple[bool, list[PredictionRow]]:
    """Scan until every accepted reading has a row, or `timeout` s pass; return the last scan.

    `check` runs between scans (e.g. to fail fast when a host died).
    """
    deadline = time.monotonic() + timeout
    while True:
        rows = table.rows()
        if accepted <= {(r.device_id, r.row_key) for r in rows}:
            return True, rows
        if time.monotonic() >= deadline:
            return False, rows
        check()
        time.sleep(0.5)


def count_scored(db: Path, table: str = "DeviceAggregates") -> int | None:
    """Readings in the aggregate rows the dashboard received (None if it has no database)."""
    if not db.exists():
        return None
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        bodies = conn.execute("SELECT body FROM rows WHERE tbl = ?", (table,)).fetchall()
    finally:
        conn.close()
    return sum(int(json.loads(body).get("readings") or 0) for (body,) in bodies)


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return round(ordered[index], 3)
