"""SQLite storage of push datasets and their rows, with Power BI's basicFIFO retention.

One file (or `:memory:`), one connection behind a lock: the dashboard's writes are a few POSTs
a second, far below what one SQLite connection handles. Each row is kept as its JSON text, with
`device_id` and its time (`window_start` or `timestamp`) copied out for the page's queries.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Dataset", "RowStore", "StoredRow", "dataset_id_for"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS datasets (
    id TEXT PRIMARY KEY, workspace TEXT NOT NULL, name TEXT NOT NULL,
    retention TEXT NOT NULL, tables TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rows (
    seq INTEGER PRIMARY KEY, dataset TEXT NOT NULL, tbl TEXT NOT NULL,
    received REAL NOT NULL, device_id TEXT, ts TEXT, body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS rows_by_table ON rows (dataset, tbl, seq);
CREATE INDEX IF NOT EXISTS rows_by_device ON rows (tbl, device_id, seq);
"""
_NAMESPACE = uuid.UUID("5f0c6a3e-2b7d-4c59-9a51-1e2f7d0c9b44")


def dataset_id_for(workspace: str, name: str) -> str:
    """A stable id for (workspace, name): creating the same dataset twice gives the same id."""
    return str(uuid.uuid5(_NAMESPACE, f"{workspace}\n{name}"))


@dataclass(frozen=True, slots=True)
class Dataset:
    """A push dataset: `tables` maps each table name to its columns (name → dataType)."""

    id: str
    workspace: str
    name: str
    retention: str
    tables: dict[str, dict[str, str]]

    def describe(self) -> dict[str, Any]:
        """The dataset as Power BI's GET datasets lists it."""
        return {
            "id": self.id,
            "name": self.name,
            "addRowsAPIEnabled": True,
            "defaultRetentionPolicy": self.retention,
            "isRefreshable": False,
            "tables": [
                {"name": t, "columns": [{"name": c, "dataType": d} for c, d in cols.items()]}
                for t, cols in self.tables.items()
            ],
        }


@dataclass(frozen=True, slots=True)
class StoredRow:
    """One stored row with the order (`seq`) and the wall-clock time it arrived."""

    seq: int
    dataset: str
    table: str
    received: float
    row: dict[str, Any]


class RowStore:
    """Datasets and rows in SQLite; thread-safe.

    Args:
        path: a database file (its folder is created) or ":memory:".
        fifo_rows: rows kept per table of a `basicFIFO` dataset; the oldest go first.
    """

    def __init__(self, path: str | Path, *, fifo_rows: int = 200_000) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._fifo = fifo_rows
        self._lock = threading.Lock()
        (last,) = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM rows").fetchone()
        self._seq = int(last)  # FIFO deletes the oldest rows only, so the maximum never falls
        self._counts: dict[tuple[str, str], int] = {
            (d, t): n
            for d, t, n in self._db.execute("SELECT dataset, tbl, COUNT(*) FROM rows GROUP BY 1, 2")
        }

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def upsert_dataset(self, dataset: Dataset) -> tuple[Dataset, bool]:
        """Store `dataset` unless one with its id exists; return (the stored one, created)."""
        with self._lock:
            found = self._get(dataset.id)
            if found is not None:
                return found, False
            self._db.execute(
                "INSERT INTO datasets VALUES (?, ?, ?, ?, ?)",
                (
                    dataset.id,
                    dataset.workspace,
                    dataset.name,
                    dataset.retention,
                    json.dumps(dataset.tables),
                ),
            )
            return dataset, True

    def replace_table(self, dataset_id: str, table: str, columns: dict[str, str]) -> None:
        """Set one existing table's columns (Power BI's PUT table); its rows stay."""
        with self._lock:
            found = self._get(dataset_id)
            if found is None or table not in found.tables:
                raise KeyError(f"{dataset_id}/{table}")
            tables = {**found.tables, table: dict(columns)}
            self._db.execute(
                "UPDATE datasets SET tables = ? WHERE id = ?", (json.dumps(tables), dataset_id)
            )

    def get_dataset(self, dataset_id: str) -> Dataset | None:
        """The dataset with `dataset_id`, or None."""
        with self._lock:
            return self._get(dataset_id)

    def list_datasets(self, workspace: str) -> list[Dataset]:
        """Datasets of one workspace ("" is My workspace), oldest first."""
        with self._lock:
            ids = self._db.execute(
                "SELECT id FROM datasets WHERE workspace = ? ORDER BY rowid", (workspace,)
            ).fetchall()
            return [d for (i,) in ids if (d := self._get(i)) is not None]

    def table_rows(self, dataset_id: str, table: str) -> int:
        """Rows held in one table now."""
        with self._lock:
            return self._counts.get((dataset_id, table), 0)

    def largest_table(self, dataset_id: str) -> int:
        """Rows held in the dataset's largest table (Power BI's 250,000-row rule)."""
        with self._lock:
            return max((n for (d, _), n in self._counts.items() if d == dataset_id), default=0)

    def add_rows(
        self, dataset: Dataset, table: str, rows: Sequence[dict[str, Any]], received: float
    ) -> list[StoredRow]:
        """Append rows in one transaction, then trim the table to its FIFO size."""
        key = (dataset.id, table)
        with self._lock:
            first = self._seq + 1
            records = [
                (first + i, *key, received, _text(r.get("device_id")), _time_of(r), json.dumps(r))
                for i, r in enumerate(rows)
            ]
            self._db.execute("BEGIN")
            try:
                self._db.executemany("INSERT INTO rows VALUES (?, ?, ?, ?, ?, ?, ?)", records)
                count = self._counts.get(key, 0) + len(records)
                if dataset.retention == "basicFIFO" and count > self._fifo:
                    self._trim(key, count - self._fifo)
                    count = self._fifo
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._counts[key], self._seq = count, first + len(records) - 1
        return [
            StoredRow(first + i, dataset.id, table, received, dict(r)) for i, r in enumerate(rows)
        ]

    def rows(self, dataset_id: str, table: str, *, limit: int = 1000) -> list[dict[str, Any]]:
        """The newest `limit` rows of one table, oldest first."""
        return [
            json.loads(b)
            for (b,) in reversed(
                self._query(
                    "SELECT body FROM rows WHERE dataset = ? AND tbl = ? ORDER BY seq DESC LIMIT ?",
                    (dataset_id, table, limit),
                )
            )
        ]

    def device_rows(self, table: str, device_id: str, *, limit: int) -> list[dict[str, Any]]:
        """A device's newest `limit` rows of `table` (any dataset), oldest first."""
        sql = "SELECT body FROM rows WHERE tbl = ? AND device_id = ? ORDER BY seq DESC LIMIT ?"
        return [json.loads(b) for (b,) in reversed(self._query(sql, (table, device_id, limit)))]

    def latest_per_device(self, table: str) -> list[StoredRow]:
        """Each device's last-arrived row of `table` (any dataset), for rebuilding the view."""
        sql = (
            "SELECT seq, dataset, tbl, received, body FROM rows WHERE seq IN "
            "(SELECT MAX(seq) FROM rows WHERE tbl = ? GROUP BY device_id) ORDER BY seq"
        )
        return self._stored(sql, (table,))

    def tail(self, table: str, *, limit: int) -> list[StoredRow]:
        """The last `limit` rows of `table` across datasets, oldest first."""
        sql = "SELECT seq, dataset, tbl, received, body FROM rows WHERE tbl = ? "
        return self._stored(f"{sql} ORDER BY seq DESC LIMIT ?", (table, limit))[::-1]

    def _stored(self, sql: str, args: tuple[Any, ...]) -> list[StoredRow]:
        return [StoredRow(s, d, t, r, json.loads(b)) for s, d, t, r, b in self._query(sql, args)]

    def _query(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _get(self, dataset_id: str) -> Dataset | None:
        found = self._db.execute(
            "SELECT id, workspace, name, retention, tables FROM datasets WHERE id = ?",
            (dataset_id,),
        ).fetchone()
        return Dataset(*found[:4], json.loads(found[4])) if found else None

    def _trim(self, key: tuple[str, str], excess: int) -> None:
        """Delete the table's `excess` oldest rows (basicFIFO)."""
        self._db.execute(
            "DELETE FROM rows WHERE dataset = ? AND tbl = ? AND seq <= ("
            "SELECT seq FROM rows WHERE dataset = ? AND tbl = ? ORDER BY seq LIMIT 1 OFFSET ?)",
            (*key, *key, excess - 1),
        )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _time_of(row: dict[str, Any]) -> str | None:
    return _text(row.get("window_start")) or _text(row.get("timestamp"))
