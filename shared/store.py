"""The Table Storage seam: predictions, device state, anomalies and dead letters.

Two implementations pass one contract suite (`tests/shared/test_store.py`):

* `TableStore` speaks to Azure Table Storage (or Azurite) through azure-data-tables.
* `InMemoryTableStore` keeps plain dicts but enforces the service's documented limits, so a
  unit test that passes against it does not hide a write the service would refuse.

Both share everything but five primitives (create tables, point read, one transaction, range
scan, fan-out), so keys, entity layout, batching, ordering and paging are one code path.

Layout (see ARCHITECTURE.md "Tables"):

* `Predictions`: PartitionKey = device id, RowKey = `readings.row_key(ts)`.
* `DeviceState`: PartitionKey = device id, RowKey = `state`; the state as JSON in `state`.
* `Anomalies`: PartitionKey = `YYYYMMDD`, RowKey = `<row_key(ts)>_<device_id>`.
* `DeadLetters`: PartitionKey = `YYYYMMDD`, RowKey = `DeadLetter.row_key`.

Size rules: a string property holds at most 32K UTF-16 code units and an entity at most 1 MiB
(strings count two bytes per code unit). Long text is therefore split over `<name>_0..<name>_n`
properties of at most 32,000 units. A device state that cannot fit in ~900 KB raises
`PermanentError` (a truncated state would be silently wrong); a dead-letter payload that
cannot fit is truncated, marked `payload_truncated`, and kept with its size and SHA-256.

Integers outside int32 are stored as Edm.Int64 and those outside int64 as doubles, so they read
back as `int` (or, beyond 2**63, as the nearest `float`). None values are not stored: an extra
field that was None is absent when read back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from typing import Any, Protocol, Self, TypeVar

from azure.core.exceptions import (
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.data.tables import EdmType, TableClient, TableServiceClient, UpdateMode

from .deadletters import DeadLetter
from .errors import ConfigError, PermanentError, TransientError
from .predictions import Prediction
from .readings import format_timestamp, row_key

__all__ = [
    "InMemoryTableStore",
    "PredictionPage",
    "PredictionStore",
    "TableStore",
]

log = logging.getLogger(__name__)

Entity = dict[str, Any]
T = TypeVar("T")
R = TypeVar("R")

PREDICTIONS, DEVICE_STATE, ANOMALIES, DEAD_LETTERS = (
    "Predictions",
    "DeviceState",
    "Anomalies",
    "DeadLetters",
)
_TABLES = (PREDICTIONS, DEVICE_STATE, ANOMALIES, DEAD_LETTERS)

# Service limits (Azure Table Storage documentation) and the margins kept below them.
_MAX_BATCH_OPS = 100
_MAX_BATCH_BYTES = 4_000_000  # 4 MiB is 4,194,304; the rest covers the multipart envelope
_MAX_ENTITY_BYTES = 1024 * 1024
_ENTITY_BUDGET = 900_000  # what we plan for, so our size formula may err a little
_MAX_STRING_UNITS = 32 * 1024
_CHUNK_UNITS = 32_000
_MAX_PROPERTIES = 252  # custom properties, besides PartitionKey, RowKey and Timestamp
_MAX_KEY_UNITS = 512  # 1 KiB of UTF-16
_INT32 = range(-(2**31), 2**31)
_INT64 = range(-(2**63), 2**63)
_REASON_UNITS = 8_000  # reasons are messages, not data: cut them rather than chunk them

_KEY_FORBIDDEN = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")
_PROPERTY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
_PREFIX = re.compile(r"(?:[A-Za-z][A-Za-z0-9]{0,39})?")
_ROW_KEY = re.compile(r"\d{8}T\d{6}\.\d{3}Z")
_CORE = frozenset(
    {
        "PartitionKey",
        "RowKey",
        "timestamp",
        "anomaly_score",
        "is_anomaly",
        "top_metric",
        "failure_probability",
        "maintenance_due",
        "model_version",
        "metrics",
        "device_id",
    }
)
_FIRST_WINDOW = timedelta(hours=1)
_MAX_WINDOW = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class PredictionPage:
    """One page of rows in JSON form; `next_after` is the RowKey to continue after, or None."""

    items: list[dict[str, Any]]
    next_after: str | None


class PredictionStore(Protocol):
    """What the pipeline, the query API and the operator CLI need from Table Storage."""

    def create_tables(self) -> None:
        """Create the four tables if missing (idempotent)."""
        ...

    def get_states(self, device_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        """Return each device's state, None for a device without one."""
        ...

    def upsert_states(
        self, states: Mapping[str, dict[str, Any]], *, model_version: str, now: datetime
    ) -> None:
        """Replace the stored state of each device."""
        ...

    def upsert_predictions(self, predictions: Sequence[Prediction]) -> None:
        """Store predictions; the same prediction twice leaves one row."""
        ...

    def upsert_anomalies(self, predictions: Sequence[Prediction]) -> None:
        """Index the anomalous predictions by day."""
        ...

    def add_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        """Keep what could not be processed; redelivery overwrites, never duplicates."""
        ...

    def list_predictions(
        self,
        device_id: str,
        *,
        start: datetime,
        end: datetime,
        anomalies_only: bool = False,
        limit: int = 100,
        newest_first: bool = False,
        after: str | None = None,
    ) -> PredictionPage:
        """Return one page of a device's predictions with `start <= timestamp < end`."""
        ...

    def list_anomalies(
        self, day: date, *, limit: int = 100, after: str | None = None
    ) -> PredictionPage:
        """Return one page of a UTC day's anomalies, in time order."""
        ...

    def list_dead_letters(
        self, day: date, *, limit: int = 100, after: str | None = None
    ) -> PredictionPage:
        """Return one page of a UTC day's dead letters, payloads reassembled."""
        ...


# --- entity layout -------------------------------------------------------------------------


def _units(text: str) -> int:
    """UTF-16 code units: what the service counts for string limits."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _split_utf16(text: str, units: int) -> list[str]:
    """Split `text` into pieces of at most `units` UTF-16 units, never inside a surrogate pair."""
    data = text.encode("utf-16-le", "surrogatepass")
    pieces: list[str] = []
    i = 0
    while i < len(data):
        j = min(i + 2 * units, len(data))
        if j < len(data) and 0xD8 <= data[j - 1] <= 0xDB:  # a high surrogate ends the piece
            j -= 2
        pieces.append(data[i:j].decode("utf-16-le", "surrogatepass"))
        i = j
    return pieces


def _json(value: object) -> str:
    """Compact JSON that keeps non-ASCII characters as they are.

    An escape costs 6 UTF-16 units where the character costs 1 or 2. A lone surrogate can only
    travel escaped, so such a value falls back to ASCII JSON.
    """
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":"))
    return text


def _text_properties(name: str, text: str) -> Entity:
    """`{name: text}`, or `{name_0: ..., name_n: ...}` when over one property's limit."""
    pieces = _split_utf16(text, _CHUNK_UNITS)
    if len(pieces) <= 1:
        return {name: text}
    return {f"{name}_{i}": piece for i, piece in enumerate(pieces)}


def _join_text(entity: Mapping[str, Any], name: str) -> str | None:
    if name in entity:
        return str(entity[name])
    pieces: list[str] = []
    while (piece := entity.get(f"{name}_{len(pieces)}")) is not None:
        pieces.append(str(piece))
    return "".join(pieces) if pieces else None


def _value(value: object) -> Any:
    """A Python scalar as the SDK must be given it (ints beyond int32 need an explicit type)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return value
    if value in _INT32:
        return value
    if value in _INT64:
        return (value, EdmType.INT64)
    return float(value)


def _plain(value: Any) -> Any:
    """Undo `_value`: typed values come back as `EntityProperty(value, edm_type)` tuples."""
    return value[0] if isinstance(value, tuple) else value


def _value_size(value: Any) -> int:
    value = _plain(value)
    if isinstance(value, str):
        return 4 + 2 * _units(value)
    if isinstance(value, bool):
        return 1
    if isinstance(value, int) and value in _INT32:
        return 4
    return 8


def _entity_size(entity: Mapping[str, Any]) -> int:
    """The service's documented size formula: 4 + keys + per property 8 + name + value."""
    size = 4 + 2 * _units(entity["PartitionKey"]) + 2 * _units(entity["RowKey"])
    for name, value in entity.items():
        if name not in ("PartitionKey", "RowKey") and value is not None:
            size += 8 + 2 * len(name) + _value_size(value)
    return size


def _wire_size(entity: Mapping[str, Any]) -> int:
    """A generous estimate of an entity's share of a transaction body.

    JSON with every non-ASCII character escaped (the worst case), an `@odata.type` annotation
    per property, and the operation's own request line and headers with escaped keys.
    """
    body = len(json.dumps(entity, default=str))
    annotations = sum(len(name) + 32 for name in entity)
    keys = 3 * (len(entity["PartitionKey"]) + len(entity["RowKey"]))
    return body + annotations + keys + 600


def _check_key(value: object, what: str) -> None:
    """Reject keys the service refuses (and `/`, which Azurite answers with a 500)."""
    if not isinstance(value, str):
        raise PermanentError(f"{what} must be a string", status=400)
    if _units(value) > _MAX_KEY_UNITS:
        raise PermanentError(f"{what} is over 1 KiB", status=400)
    if _KEY_FORBIDDEN.search(value):
        raise PermanentError(f"{what} holds / \\ # ? or a control character", status=400)


def _prediction_entity(p: Prediction, partition_key: str, key: str) -> Entity:
    entity: Entity = {
        "PartitionKey": partition_key,
        "RowKey": key,
        "timestamp": format_timestamp(p.timestamp),
        "anomaly_score": float(p.anomaly_score),
        "is_anomaly": bool(p.is_anomaly),
        "model_version": p.model_version,
        "metrics": _json(p.metrics),
    }
    if p.top_metric is not None:
        entity["top_metric"] = p.top_metric
    if p.failure_probability is not None:
        entity["failure_probability"] = float(p.failure_probability)
    if p.maintenance_due is not None:
        entity["maintenance_due"] = bool(p.maintenance_due)
    for name, value in p.extra.items():
        if name in _CORE:
            raise PermanentError(f"extra field {name!r} collides with a stored property")
        if value is not None:
            entity[name] = _value(value)
    return entity


def _prediction_json(entity: Mapping[str, Any], device_id: str) -> dict[str, Any]:
    probability = entity.get("failure_probability")
    out: dict[str, Any] = {
        "device_id": device_id,
        "timestamp": entity["timestamp"],
        "anomaly_score": float(_plain(entity["anomaly_score"])),
        "is_anomaly": bool(entity["is_anomaly"]),
        "top_metric": entity.get("top_metric"),
        "failure_probability": None if probability is None else float(_plain(probability)),
        "maintenance_due": entity.get("maintenance_due"),
        "model_version": entity["model_version"],
        "metrics": json.loads(entity["metrics"]),
    }
    for name, value in entity.items():
        if name not in _CORE:
            out[name] = _plain(value)
    return out


def _anomaly_key(p: Prediction) -> tuple[str, str]:
    return p.timestamp.astimezone(UTC).strftime("%Y%m%d"), f"{row_key(p.timestamp)}_{p.device_id}"


def _state_entity(
    device_id: str, state: Mapping[str, Any], model_version: str, now: datetime
) -> Entity:
    entity: Entity = {
        "PartitionKey": device_id,
        "RowKey": "state",
        **_text_properties("state", _json(state)),
        "model_version": model_version,
        "updated_at": format_timestamp(now),
    }
    if _entity_size(entity) > _ENTITY_BUDGET:
        raise PermanentError(
            f"state of device {device_id!r} is {_entity_size(entity)} bytes as stored;"
            f" at most {_ENTITY_BUDGET} fit in one entity"
        )
    return entity


def _letter_entity(letter: DeadLetter) -> Entity:
    head: Entity = {
        "PartitionKey": letter.partition_key,
        "RowKey": letter.row_key,
        "reason": _split_utf16(letter.reason, _REASON_UNITS)[0] if letter.reason else "",
        "source": _split_utf16(letter.source, 1_000)[0] if letter.source else "",
        "occurred_at": format_timestamp(letter.occurred_at),
    }
    for name in ("partition", "offset", "sequence_number", "device_id"):
        value = getattr(letter, name)
        if value is not None:
            head[name] = _value(value)
    entity = {**head, **_text_properties("payload", letter.payload)}
    if _entity_size(entity) <= _ENTITY_BUDGET:
        return entity
    raw = letter.payload.encode("utf-8", "surrogatepass")
    head |= {
        "payload_truncated": True,
        "payload_bytes": _value(len(raw)),
        "payload_sha256": hashlib.sha256(raw).hexdigest(),
    }
    pieces = _split_utf16(letter.payload, _CHUNK_UNITS)
    room = _ENTITY_BUDGET - _entity_size({**head, "payload_0": ""})
    kept: list[str] = []
    for i, piece in enumerate(pieces):
        cost = 8 + 2 * len(f"payload_{i}") + 4 + 2 * _units(piece)
        if cost > room:
            break
        kept.append(piece)
        room -= cost
    log.warning(
        "dead letter %s (source=%s device=%s partition=%s offset=%s) has a %d-byte payload;"
        " stored the first %d of %d pieces and marked it truncated",
        letter.row_key,
        letter.source,
        letter.device_id,
        letter.partition,
        letter.offset,
        len(raw),
        len(kept),
        len(pieces),
    )
    return {**head, **{f"payload_{i}": piece for i, piece in enumerate(kept or [""])}}


def _letter_json(entity: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": entity["RowKey"],
        "payload": _join_text(entity, "payload") or "",
        "reason": entity.get("reason", ""),
        "source": entity.get("source", ""),
        "occurred_at": entity.get("occurred_at"),
        "partition": entity.get("partition"),
        "offset": entity.get("offset"),
        "sequence_number": _plain(entity.get("sequence_number")),
        "device_id": entity.get("device_id"),
        "payload_truncated": bool(entity.get("payload_truncated", False)),
        "payload_bytes": _plain(entity.get("payload_bytes")),
        "payload_sha256": entity.get("payload_sha256"),
    }


def _plan(entities: Iterable[Entity]) -> list[list[Entity]]:
    """Group into transactions: one PartitionKey, unique RowKeys, ≤100 ops, ≤4 MB each.

    A RowKey seen twice keeps its last entity: the service refuses duplicates in one
    transaction, and the last write is the one an upsert sequence would leave anyway.
    """
    partitions: dict[str, dict[str, Entity]] = {}
    for entity in entities:
        rows = partitions.setdefault(entity["PartitionKey"], {})
        rows.pop(entity["RowKey"], None)
        rows[entity["RowKey"]] = entity
    batches: list[list[Entity]] = []
    for rows in partitions.values():
        batch: list[Entity] = []
        size = 0
        for entity in rows.values():
            cost = _wire_size(entity)
            if batch and (len(batch) == _MAX_BATCH_OPS or size + cost > _MAX_BATCH_BYTES):
                batches.append(batch)
                batch, size = [], 0
            batch.append(entity)
            size += cost
        if batch:
            batches.append(batch)
    return batches


def _ceil_ms(ts: datetime) -> datetime:
    """Round up to the millisecond: a reading at ms precision is >= ts iff >= this."""
    if ts.tzinfo is None:
        raise ValueError("datetimes must be timezone-aware")
    rest = ts.microsecond % 1000
    return ts + timedelta(microseconds=1000 - rest) if rest else ts


def _key_time(key: str) -> datetime:
    return datetime.strptime(key, "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC)


def _page(
    rows: list[Entity], limit: int, to_json: Callable[[Entity], dict[str, Any]]
) -> PredictionPage:
    """`rows` holds up to `limit + 1` rows: the extra one only says that more exist."""
    kept = rows[:limit]
    more = len(rows) > limit
    return PredictionPage([to_json(r) for r in kept], kept[-1]["RowKey"] if more else None)


# --- the shared store ----------------------------------------------------------------------


def _check_prefix(prefix: object) -> None:
    if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
        raise ConfigError("table_prefix", "must be empty or up to 40 letters and digits")


class _StoreBase(ABC):
    """Everything but I/O; subclasses provide the five primitives at the bottom."""

    def __init__(self, *, table_prefix: str = "", max_workers: int = 4) -> None:
        _check_prefix(table_prefix)
        if max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        self.table_prefix = table_prefix
        self.max_workers = max_workers
        self._tables_ready = False
        self._tables_lock = threading.Lock()

    def table_name(self, table: str) -> str:
        """Return the real name of one of the four tables, with the prefix."""
        return f"{self.table_prefix}{table}"

    def create_tables(self) -> None:
        """Create the four tables if missing; safe to call again (the app does at start-up)."""
        for table in _TABLES:
            self._create(self.table_name(table))
        self._tables_ready = True

    def _ready(self) -> None:
        if not self._tables_ready:
            with self._tables_lock:
                if not self._tables_ready:
                    self.create_tables()

    def get_states(self, device_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        """Return each device's state (one point read each, fanned out), None when missing."""
        ids = list(dict.fromkeys(device_ids))
        for device_id in ids:
            _check_key(device_id, "device_id")
        if not ids:
            return {}
        self._ready()
        table = self.table_name(DEVICE_STATE)
        found = self._map(lambda d: self._get(table, d, "state"), ids, reads=True)
        out: dict[str, dict[str, Any] | None] = {}
        for device_id, entity in zip(ids, found, strict=True):
            text = None if entity is None else _join_text(entity, "state")
            out[device_id] = None if text is None else json.loads(text)
        return out

    def upsert_states(
        self, states: Mapping[str, dict[str, Any]], *, model_version: str, now: datetime
    ) -> None:
        """Replace each device's state; every state is checked before anything is written."""
        entities = [_state_entity(d, s, model_version, now) for d, s in states.items()]
        self._write(DEVICE_STATE, entities)

    def upsert_predictions(self, predictions: Sequence[Prediction]) -> None:
        """Upsert (replace) one row per (device, timestamp), in batch transactions."""
        self._write(
            PREDICTIONS,
            (_prediction_entity(p, p.device_id, row_key(p.timestamp)) for p in predictions),
        )

    def upsert_anomalies(self, predictions: Sequence[Prediction]) -> None:
        """Index the predictions flagged `is_anomaly` under their UTC day."""
        entities = []
        for p in predictions:
            if p.is_anomaly:
                entity = _prediction_entity(p, *_anomaly_key(p))
                entity["device_id"] = p.device_id
                entities.append(entity)
        self._write(ANOMALIES, entities)

    def add_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        """Upsert dead letters by their stable id; an oversized payload is truncated, not lost."""
        self._write(DEAD_LETTERS, [_letter_entity(letter) for letter in letters])

    def _write(self, table: str, entities: Iterable[Entity]) -> None:
        batches = _plan(entities)
        for batch in batches:
            _check_key(batch[0]["PartitionKey"], "PartitionKey")
            for entity in batch:
                _check_key(entity["RowKey"], "RowKey")
        if not batches:
            return
        self._ready()
        name = self.table_name(table)
        self._map(lambda b: self._submit(name, b), batches, reads=False)
        log.debug(
            "upserted %d entities into %s in %d transactions",
            sum(len(b) for b in batches),
            name,
            len(batches),
        )

    def list_predictions(
        self,
        device_id: str,
        *,
        start: datetime,
        end: datetime,
        anomalies_only: bool = False,
        limit: int = 100,
        newest_first: bool = False,
        after: str | None = None,
    ) -> PredictionPage:
        """Return one page of a device's predictions with `start <= timestamp < end`.

        Oldest first is one range query. Newest first costs more: the service returns rows
        in ascending RowKey order only, so the range is read backwards in time windows (1 h,
        doubling up to 7 days), each read whole, then reversed, until `limit + 1` rows are
        found or `start` is reached. A page therefore reads at most the rows of its last
        window beyond what it returns, plus one query per empty window.

        Args:
            device_id: the PartitionKey.
            start: inclusive lower bound (timezone-aware).
            end: exclusive upper bound (timezone-aware).
            anomalies_only: keep only rows with `is_anomaly` (filtered by the service).
            limit: most items to return, at least 1.
            newest_first: descending time order.
            after: the `next_after` of the previous page: an exclusive RowKey bound in the
                direction of travel.
        """
        _check_key(device_id, "device_id")
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if after is not None and not _ROW_KEY.fullmatch(after):
            raise ValueError(f"after is not a Predictions RowKey: {after!r}")
        low, high = _ceil_ms(start), _ceil_ms(end)
        lo, hi = row_key(low), row_key(high)
        if lo >= hi:
            return PredictionPage([], None)
        self._ready()
        table = self.table_name(PREDICTIONS)

        def to_json(e: Entity) -> dict[str, Any]:
            return _prediction_json(e, device_id)

        if not newest_first:
            lo_inclusive = True
            if after is not None and after >= lo:
                lo, lo_inclusive = after, False
            rows = self._scan(
                table, device_id, lo, lo_inclusive, hi, anomalies_only, limit=limit + 1
            )
            return _page(rows, limit, to_json)

        if after is not None and after < hi:
            hi = after
        window = _FIRST_WINDOW
        found: list[Entity] = []
        while hi > lo and len(found) <= limit:
            try:
                w_lo = max(row_key(max(low, _key_time(hi) - window)), lo)
            except OverflowError:
                w_lo = lo
            found.extend(reversed(self._scan(table, device_id, w_lo, True, hi, anomalies_only)))
            hi = w_lo
            window = min(window * 2, _MAX_WINDOW)
        return _page(found, limit, to_json)

    def list_anomalies(
        self, day: date, *, limit: int = 100, after: str | None = None
    ) -> PredictionPage:
        """Return one page of a UTC day's anomalies, oldest first (then by device id)."""
        rows = self._list_day(ANOMALIES, day, limit, after)
        return _page(rows, limit, lambda e: _prediction_json(e, e["device_id"]))

    def list_dead_letters(
        self, day: date, *, limit: int = 100, after: str | None = None
    ) -> PredictionPage:
        """Return one page of a UTC day's dead letters (by id), payloads reassembled.

        Each item: id, payload, reason, source, occurred_at, partition, offset,
        sequence_number, device_id, payload_truncated, payload_bytes, payload_sha256 (the last
        two None unless truncated).
        """
        return _page(self._list_day(DEAD_LETTERS, day, limit, after), limit, _letter_json)

    def _list_day(self, table: str, day: date, limit: int, after: str | None) -> list[Entity]:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        if after is not None:
            _check_key(after, "after")
        self._ready()
        lo, inclusive = (after, False) if after is not None else ("", True)
        name = self.table_name(table)
        return self._scan(name, day.strftime("%Y%m%d"), lo, inclusive, None, False, limit=limit + 1)

    # primitives ------------------------------------------------------------------------

    def _map(self, fn: Callable[[T], R], items: Sequence[T], *, reads: bool) -> list[R]:
        """Apply `fn` to every item, in order; the real store fans out over threads."""
        return [fn(item) for item in items]

    @abstractmethod
    def _create(self, table: str) -> None: ...

    @abstractmethod
    def _get(self, table: str, partition_key: str, key: str) -> Entity | None: ...

    @abstractmethod
    def _submit(self, table: str, batch: list[Entity]) -> None: ...

    @abstractmethod
    def _scan(
        self,
        table: str,
        partition_key: str,
        lo: str,
        lo_inclusive: bool,
        hi: str | None,
        anomalies_only: bool,
        *,
        limit: int | None = None,
    ) -> list[Entity]:
        """Rows of one partition with lo <(=) RowKey < hi, ascending, at most `limit`."""


# --- Azure Table Storage -------------------------------------------------------------------


def _retry_after(exc: HttpResponseError) -> float | None:
    headers = exc.response.headers if exc.response is not None else {}
    for name, scale in (("Retry-After", 1.0), ("x-ms-retry-after-ms", 0.001)):
        raw = headers.get(name)
        if raw is not None:
            try:
                seconds = float(raw) * scale
            except ValueError:
                continue  # an HTTP-date: leave the pause to the caller's backoff
            if math.isfinite(seconds) and seconds >= 0:
                return seconds
    return None


@contextmanager
def _mapped(action: str) -> Iterator[None]:
    """Translate SDK errors: transient (retry later) versus permanent (do not resend)."""
    try:
        yield
    except (ServiceRequestError, ServiceResponseError) as exc:
        raise TransientError(f"table storage unreachable ({action}): {type(exc).__name__}") from exc
    except HttpResponseError as exc:
        status = exc.status_code
        code = getattr(exc, "error_code", None) or ""
        if status is None or status in (408, 429) or status >= 500:
            raise TransientError(
                f"table storage answered {status} {code} ({action})",
                retry_after=_retry_after(exc),
            ) from exc
        raise PermanentError(
            f"table storage refused {action}: {status} {code}", status=status
        ) from exc


class TableStore(_StoreBase):
    """The store on Azure Table Storage or Azurite.

    Writes fan out over `max_workers` threads (one transaction each); `get_states` over
    `read_workers`. The SDK's own retries are kept short (`retry_total=3`, 0.2 s backoff) so
    an unreachable service fails in seconds and the caller's retry policy takes over.
    """

    def __init__(
        self,
        service_client: TableServiceClient,
        *,
        table_prefix: str = "",
        max_workers: int = 4,
        read_workers: int = 8,
    ) -> None:
        super().__init__(table_prefix=table_prefix, max_workers=max_workers)
        self._service = service_client
        self._read_workers = read_workers
        self._clients: dict[str, TableClient] = {}
        self._clients_lock = threading.Lock()

    @classmethod
    def from_connection_string(
        cls,
        conn: str,
        *,
        table_prefix: str = "",
        max_workers: int = 4,
        read_workers: int = 8,
        retry_total: int = 3,
    ) -> TableStore:
        """Build from a storage connection string (never logged: it holds the account key)."""
        _check_prefix(table_prefix)
        try:
            service = TableServiceClient.from_connection_string(
                conn,
                retry_total=retry_total,
                retry_backoff_factor=0.2,
                retry_backoff_max=4,
                connection_timeout=5,
                read_timeout=30,
            )
        except ValueError:
            raise ConfigError("TABLES_CONNECTION", "is not a valid connection string") from None
        return cls(
            service, table_prefix=table_prefix, max_workers=max_workers, read_workers=read_workers
        )

    def close(self) -> None:
        """Close the HTTP session the table clients share."""
        self._service.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _client(self, table: str) -> TableClient:
        with self._clients_lock:
            client = self._clients.get(table)
            if client is None:
                client = self._clients[table] = self._service.get_table_client(table)
            return client

    def _map(self, fn: Callable[[T], R], items: Sequence[T], *, reads: bool) -> list[R]:
        workers = min(len(items), self._read_workers if reads else self.max_workers)
        if workers <= 1:
            return [fn(item) for item in items]
        with ThreadPoolExecutor(workers, thread_name_prefix="fleetscore-tables") as pool:
            return list(pool.map(fn, items))

    def _create(self, table: str) -> None:
        with _mapped(f"create table {table}"):
            self._service.create_table_if_not_exists(table)

    def _get(self, table: str, partition_key: str, key: str) -> Entity | None:
        with _mapped(f"read {table}"):
            try:
                return dict(self._client(table).get_entity(partition_key, key))
            except ResourceNotFoundError as exc:
                if getattr(exc, "error_code", None) == "TableNotFound":
                    raise
                return None

    def _submit(self, table: str, batch: list[Entity]) -> None:
        client = self._client(table)
        with _mapped(f"write {len(batch)} rows to {table}"):
            if len(batch) == 1:
                client.upsert_entity(batch[0], mode=UpdateMode.REPLACE)
            else:
                client.submit_transaction(
                    [("upsert", e, {"mode": UpdateMode.REPLACE}) for e in batch]
                )

    def _scan(
        self,
        table: str,
        partition_key: str,
        lo: str,
        lo_inclusive: bool,
        hi: str | None,
        anomalies_only: bool,
        *,
        limit: int | None = None,
    ) -> list[Entity]:
        # Parameters only: user input never becomes OData text.
        query = "PartitionKey eq @pk and RowKey " + ("ge" if lo_inclusive else "gt") + " @lo"
        params = {"pk": partition_key, "lo": lo}
        if hi is not None:
            query += " and RowKey lt @hi"
            params["hi"] = hi
        if anomalies_only:
            query += " and is_anomaly eq true"
        per_page = min(limit, 1000) if limit is not None else 1000
        with _mapped(f"query {table}"):
            pages = self._client(table).query_entities(
                query, parameters=params, results_per_page=per_page
            )
            return [dict(e) for e in islice(pages, limit)]


# --- in memory -----------------------------------------------------------------------------


def _check_entity(entity: Mapping[str, Any]) -> None:
    """What the service would refuse, raised the way `TableStore` would report it."""
    _check_key(entity.get("PartitionKey"), "PartitionKey")
    _check_key(entity.get("RowKey"), "RowKey")
    names = [n for n in entity if n not in ("PartitionKey", "RowKey")]
    if len(names) > _MAX_PROPERTIES:
        raise PermanentError(f"TooManyProperties: {len(names)} > {_MAX_PROPERTIES}", status=400)
    for name in names:
        value = entity[name]
        if not _PROPERTY_NAME.fullmatch(name):
            raise PermanentError(f"PropertyNameInvalid: {name!r}", status=400)
        if isinstance(value, tuple):
            if value[1] != EdmType.INT64 or value[0] not in _INT64:
                raise TypeError(f"unsupported typed value for {name!r}: {value!r}")
        elif isinstance(value, str):
            if _units(value) > _MAX_STRING_UNITS:
                raise PermanentError(f"PropertyValueTooLarge: {name!r}", status=400)
        elif isinstance(value, int) and not isinstance(value, bool) and value not in _INT32:
            raise TypeError(f"{name!r}: int {value} needs EdmType.INT64")  # as the SDK does
        elif value is not None and not isinstance(value, bool | int | float):
            raise TypeError(f"{name!r}: unsupported type {type(value).__name__}")
    if _entity_size(entity) > _MAX_ENTITY_BYTES:
        raise PermanentError("EntityTooLarge: the entity is over 1 MiB", status=400)


class InMemoryTableStore(_StoreBase):
    """The store in plain dicts, enforcing the service's rules; for tests and the laptop.

    It checks every transaction as the service would: one PartitionKey, at most 100
    operations and 4 MiB, no RowKey twice, key characters, property names, count, string
    length and the 1 MiB entity size (counted as Azure does, stricter than Azurite).
    """

    def __init__(self, *, table_prefix: str = "", max_workers: int = 4) -> None:
        super().__init__(table_prefix=table_prefix, max_workers=max_workers)
        self._tables: dict[str, dict[str, dict[str, Entity]]] = {}
        self._lock = threading.Lock()
        self.transactions = 0  # how many transactions were submitted, for tests

    def close(self) -> None:
        """Nothing to release; here so both stores can be closed alike."""

    def _table(self, table: str) -> dict[str, dict[str, Entity]]:
        try:
            return self._tables[table]
        except KeyError:
            raise PermanentError(f"TableNotFound: {table}", status=404) from None

    def _create(self, table: str) -> None:
        with self._lock:
            self._tables.setdefault(table, {})

    def _get(self, table: str, partition_key: str, key: str) -> Entity | None:
        with self._lock:
            entity = self._table(table).get(partition_key, {}).get(key)
            return None if entity is None else dict(entity)

    def _submit(self, table: str, batch: list[Entity]) -> None:
        if not 1 <= len(batch) <= _MAX_BATCH_OPS:
            raise PermanentError(f"InvalidInput: {len(batch)} operations", status=400)
        if len({e["PartitionKey"] for e in batch}) != 1:
            raise PermanentError("CommandsInBatchActOnDifferentPartitions", status=400)
        if len({e["RowKey"] for e in batch}) != len(batch):
            raise PermanentError("InvalidDuplicateRow", status=400)
        if sum(_wire_size(e) for e in batch) > 4 * 1024 * 1024:
            raise PermanentError("RequestBodyTooLarge", status=413)
        for entity in batch:
            _check_entity(entity)
        with self._lock:
            partition = self._table(table).setdefault(batch[0]["PartitionKey"], {})
            for entity in batch:
                partition[entity["RowKey"]] = {k: v for k, v in entity.items() if v is not None}
            self.transactions += 1

    def _scan(
        self,
        table: str,
        partition_key: str,
        lo: str,
        lo_inclusive: bool,
        hi: str | None,
        anomalies_only: bool,
        *,
        limit: int | None = None,
    ) -> list[Entity]:
        with self._lock:
            partition = self._table(table).get(partition_key, {})
            rows = [
                dict(partition[key])
                for key in sorted(partition)
                if (key >= lo if lo_inclusive else key > lo)
                and (hi is None or key < hi)
                and (not anomalies_only or partition[key].get("is_anomaly") is True)
            ]
        return rows[:limit]
