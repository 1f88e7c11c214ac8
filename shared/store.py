"""The Table Storage seam: predictions, device state, anomalies and dead letters.

Two implementations pass one contract suite (`tests/shared/test_store.py`):

* `TableStore` speaks to Azure Table Storage (or Azurite) through azure-data-tables.
* `InMemoryTableStore` keeps plain dicts but enforces the service's documented limits, so a
  unit test that passes against it does not hide a write the service would refuse.

Both share everything but five primitives (create tables, point read, one transaction, range
scan, fan-out), so keys, entity layout, batching, ordering and paging are one code path.

Layout (see ARCHITECTURE.md "Tables"):

* `Predictions`: PartitionKey = device id, RowKey = `readings.row_key(ts)`; and one row with
  RowKey = `state`, the device's state as JSON in `state`, written in the same transaction as
  the predictions it came with (time-range reads never reach it: digits sort before `s`).
* `Anomalies`: PartitionKey = `YYYYMMDD`, RowKey = `<row_key(ts)>_<device_id>`.
* `DeadLetters`: PartitionKey = `YYYYMMDD`, RowKey = `DeadLetter.row_key`.

The entity layout and the service's size rules live in `shared/_entities.py`.
"""

from __future__ import annotations

import json
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar

import requests
from azure.core.exceptions import (
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.transport import RequestsTransport
from azure.data.tables import EdmType, TableClient, TableServiceClient, UpdateMode
from requests.adapters import HTTPAdapter

from ._entities import (
    _INT32,
    _INT64,
    _MAX_BATCH_OPS,
    _MAX_ENTITY_BYTES,
    _MAX_PROPERTIES,
    _MAX_STRING_UNITS,
    _PREFIX,
    _PROPERTY_NAME,
    _ROW_KEY,
    Entity,
    _anomaly_key,
    _check_key,
    _entity_size,
    _join_text,
    _letter_entity,
    _letter_json,
    _plan,
    _prediction_entity,
    _prediction_json,
    _state_entity,
    _units,
    _wire_size,
)
from .deadletters import DeadLetter
from .errors import ConfigError, ConflictError, PermanentError, TransientError
from .predictions import Prediction
from .readings import row_key
from .retry import parse_retry_after
from .sessions import without_idle_lookups
from .states import DeviceWrite, Written
from .table_batch import Guarded, write_transaction

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

__all__ = [
    "InMemoryTableStore",
    "PredictionPage",
    "PredictionStore",
    "TableStore",
]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

PREDICTIONS, ANOMALIES, DEAD_LETTERS = ("Predictions", "Anomalies", "DeadLetters")
_TABLES = (PREDICTIONS, ANOMALIES, DEAD_LETTERS)
STATE_ROW = "state"  # the RowKey of a device's state, in its Predictions partition
_ETAG = "__etag__"  # where a read entity carries its ETag; never a stored property
# What the service answers a guarded write whose row changed since it was read.
_CHANGED = frozenset({"UpdateConditionNotSatisfied", "EntityAlreadyExists", "ResourceNotFound"})

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
        """Create the tables if missing (idempotent)."""
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
        """Return the real name of one of the tables, with the prefix."""
        return f"{self.table_prefix}{table}"

    def create_tables(self) -> None:
        """Create the tables if missing; safe to call again (the app does at start-up)."""
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
        table = self.table_name(PREDICTIONS)
        found = self._map(lambda d: self._get(table, d, STATE_ROW), ids, reads=True)
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
        self._write(PREDICTIONS, entities)

    def get_versioned_states(
        self, device_ids: Sequence[str]
    ) -> dict[str, tuple[dict[str, Any] | None, str | None]]:
        """Like `get_states`, with each row's ETag (None when the device has no row yet)."""
        ids = list(dict.fromkeys(device_ids))
        for device_id in ids:
            _check_key(device_id, "device_id")
        if not ids:
            return {}
        self._ready()
        table = self.table_name(PREDICTIONS)
        found = self._map(lambda d: self._get(table, d, STATE_ROW), ids, reads=True)
        out: dict[str, tuple[dict[str, Any] | None, str | None]] = {}
        for device_id, entity in zip(ids, found, strict=True):
            if entity is None:
                out[device_id] = (None, None)
                continue
            text = _join_text(entity, "state")
            out[device_id] = (None if text is None else json.loads(text), entity.get(_ETAG))
        return out

    def write_devices(
        self, writes: Sequence[DeviceWrite], *, model_version: str, now: datetime
    ) -> Written:
        """Store each device's predictions and its next state, the state only over the row read.

        A device's state rides in the transaction of its last predictions, conditional on the
        ETag it was read with (a create when it had none), so that transaction lands whole or
        not at all. A device with more than 99 predictions has its other transactions sent
        first, in a round of their own, so its state never lands before its predictions.

        Never raises for one device's sake: each device ends up stored (with its state's new
        ETag), in conflict (its state changed since read), refused (for good, with the reason)
        or, after a transient failure, in none of these (`Written.error` is the first one).
        """
        done = Written()
        plans: list[_DevicePlan] = []
        for write in writes:
            try:
                _check_key(write.device_id, "device_id")
                entities: list[Entity] = [
                    _prediction_entity(p, write.device_id, row_key(p.timestamp))
                    for p in write.predictions
                ]
                entities.append(_state_entity(write.device_id, write.state, model_version, now))
                batches = _plan(entities)
                for batch in batches:
                    for entity in batch:
                        _check_key(entity["RowKey"], "RowKey")
            except (PermanentError, ValueError) as exc:
                done.refused[write.device_id] = f"table service refused the predictions: {exc}"
                continue
            *firsts, last = batches
            state = Guarded(last.pop(), write.etag)  # _plan keeps the order: the state is last
            plans.append(_DevicePlan(write.device_id, firsts, last, state))
        if not plans:
            return done
        self._ready()
        table = self.table_name(PREDICTIONS)

        def settle(device_id: str, outcome: object) -> bool:
            if isinstance(outcome, ConflictError):
                done.conflicts.append(device_id)
            elif isinstance(outcome, PermanentError):
                done.refused[device_id] = f"table service refused the predictions: {outcome}"
            elif isinstance(outcome, Exception):
                done.error = done.error or outcome
            else:
                return True
            return False

        firsts = [(plan.device_id, batch) for plan in plans for batch in plan.firsts]
        if firsts:
            outcomes = self._map(
                lambda job: _attempt(lambda: self._submit(table, job[1])), firsts, reads=False
            )
            failed = {d for (d, _), o in zip(firsts, outcomes, strict=True) if not settle(d, o)}
            plans = [plan for plan in plans if plan.device_id not in failed]
        outcomes = self._map(
            lambda plan: _attempt(lambda: self._submit(table, plan.last, plan.state)),
            plans,
            reads=False,
        )
        for plan, outcome in zip(plans, outcomes, strict=True):
            if settle(plan.device_id, outcome):
                done.etags[plan.device_id] = None if outcome is None else str(outcome)
        log.debug(
            "stored %d devices' predictions and states (%d in conflict, %d refused)",
            len(done.etags),
            len(done.conflicts),
            len(done.refused),
        )
        return done

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
    def _submit(
        self, table: str, batch: list[Entity], guarded: Guarded | None = None
    ) -> str | None:
        """Upsert `batch` and write `guarded` in one transaction; return `guarded`'s new ETag.

        Raises:
            ConflictError: `guarded`'s row changed (or, for a create, exists) since read.
        """

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


@dataclass(frozen=True, slots=True)
class _DevicePlan:
    """One device's transactions: `firsts` go before `last`, which ends with its `state`."""

    device_id: str
    firsts: list[list[Entity]]
    last: list[Entity]  # the predictions that ride with the state (maybe none)
    state: Guarded


def _attempt(fn: Callable[[], R]) -> R | Exception:
    """`fn()`, or the exception it raised: one device's failure must not hide the others'."""
    try:
        return fn()
    except Exception as exc:  # sorted out by the caller, device by device
        return exc


def _client_options(threads: int, retry_total: int) -> dict[str, Any]:
    """Client options shared by both constructors: short SDK retries, one pooled session."""
    # One pooled connection per thread that may write or read at once: with the default
    # pool of 10, extra threads would open and drop a connection per request.
    session = without_idle_lookups(requests.Session())
    adapter = HTTPAdapter(pool_maxsize=threads + 2)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return {
        "retry_total": retry_total,
        "retry_backoff_factor": 0.2,
        "retry_backoff_max": 4,
        "connection_timeout": 5,
        "read_timeout": 30,
        "transport": RequestsTransport(session=session, session_owner=True),
    }


def _retry_after(exc: HttpResponseError) -> float | None:
    headers = exc.response.headers if exc.response is not None else {}
    return parse_retry_after(headers.get("Retry-After")) or parse_retry_after(
        headers.get("x-ms-retry-after-ms"), scale=0.001
    )


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
        self._pools: dict[bool, ThreadPoolExecutor] = {}

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
                conn, **_client_options(max(max_workers, read_workers), retry_total)
            )
        except ValueError:
            raise ConfigError("TABLES_CONNECTION", "is not a valid connection string") from None
        return cls(
            service, table_prefix=table_prefix, max_workers=max_workers, read_workers=read_workers
        )

    @classmethod
    def from_endpoint(
        cls,
        endpoint: str,
        *,
        credential: TokenCredential,
        table_prefix: str = "",
        max_workers: int = 4,
        read_workers: int = 8,
        retry_total: int = 3,
    ) -> TableStore:
        """Build from a table endpoint and an Entra ID credential (a managed identity on Azure).

        No secret in app settings: the identity needs "Storage Table Data Contributor" on the
        account. The lean `$batch` writer sends through the client's pipeline, so it signs
        with the bearer token as the SDK's own calls do.
        """
        _check_prefix(table_prefix)
        try:
            service = TableServiceClient(
                endpoint=endpoint,
                credential=credential,
                **_client_options(max(max_workers, read_workers), retry_total),
            )
        except ValueError:
            raise ConfigError(
                "TABLES_CONNECTION__tableServiceUri", f"is not a table endpoint: {endpoint!r}"
            ) from None
        return cls(
            service, table_prefix=table_prefix, max_workers=max_workers, read_workers=read_workers
        )

    def close(self) -> None:
        """Close the HTTP session the table clients share, and the worker threads."""
        with self._clients_lock:
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.shutdown(wait=True)
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
        limit = self._read_workers if reads else self.max_workers
        if min(len(items), limit) <= 1:
            return [fn(item) for item in items]
        return list(self._executor(reads).map(fn, items))

    def _executor(self, reads: bool) -> ThreadPoolExecutor:
        """One long-lived pool for reads and one for writes (threads are not made per call)."""
        with self._clients_lock:
            pool = self._pools.get(reads)
            if pool is None:
                workers = self._read_workers if reads else self.max_workers
                pool = self._pools[reads] = ThreadPoolExecutor(
                    workers, thread_name_prefix=f"fleetscore-tables-{'r' if reads else 'w'}"
                )
            return pool

    def _create(self, table: str) -> None:
        with _mapped(f"create table {table}"):
            self._service.create_table_if_not_exists(table)

    def _get(self, table: str, partition_key: str, key: str) -> Entity | None:
        with _mapped(f"read {table}"):
            try:
                found = self._client(table).get_entity(partition_key, key)
                entity = dict(found)
                entity[_ETAG] = found.metadata.get("etag")
                return entity
            except ResourceNotFoundError as exc:
                if getattr(exc, "error_code", None) == "TableNotFound":
                    raise
                return None

    def _submit(
        self, table: str, batch: list[Entity], guarded: Guarded | None = None
    ) -> str | None:
        # One entity: a plain upsert and a one-operation transaction cost the same client CPU
        # (the pipeline's fixed cost; bench/table_writes.py measures both), and the plain one
        # answers a refusal in one request where the lean batch would resend it to the SDK.
        client = self._client(table)
        with _mapped(f"write {len(batch) + (guarded is not None)} rows to {table}"):
            if guarded is None and len(batch) == 1:
                client.upsert_entity(batch[0], mode=UpdateMode.REPLACE)
                return None
            try:
                return write_transaction(client, batch, guarded)
            except HttpResponseError as exc:
                if guarded is not None and getattr(exc, "error_code", None) in _CHANGED:
                    raise ConflictError(_changed(guarded)) from exc
                raise

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


def _changed(guarded: Guarded) -> str:
    return f"state of {guarded.entity['PartitionKey']!r} changed since it was read"


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
        self._etags: dict[tuple[str, str, str], str] = {}
        self._version = 0
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
            if entity is None:
                return None
            return {**entity, _ETAG: self._etags.get((table, partition_key, key))}

    def _submit(
        self, table: str, batch: list[Entity], guarded: Guarded | None = None
    ) -> str | None:
        if guarded is not None:
            batch = [*batch, dict(guarded.entity)]
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
            if guarded is not None:
                where = (table, batch[-1]["PartitionKey"], batch[-1]["RowKey"])
                etag = self._etags.get(where) if where[2] in partition else None
                if etag != guarded.etag:
                    raise ConflictError(_changed(guarded))
            for entity in batch:
                partition[entity["RowKey"]] = {k: v for k, v in entity.items() if v is not None}
                self._version += 1
                self._etags[(table, entity["PartitionKey"], entity["RowKey"])] = (
                    f'W/"{self._version}"'
                )
            self.transactions += 1
            return f'W/"{self._version}"' if guarded is not None else None

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
