"""Dead letters for operators: list them, show one, and replay them once the cause is fixed.

Replay publishes the stored readings to the readings hub again (through `shared/publisher.py`)
rather than scoring them here. Every dead letter the pipeline can replay holds readings (a
schema-1 event body: one device's readings), and sending them back the normal way keeps one
writer of predictions and device state (the score function, with its state ETags, anomaly
index, sinks and dead-lettering), so a replay cannot race the live pipeline or skip a step.

Idempotence: predictions are upserted by (device, timestamp), so publishing the same readings
twice stores them once. Each replayed letter is also marked in a `DeadLettersReplayed` table
(PartitionKey = `YYYYMMDD`, RowKey = the letter's id; `replayed_at`, `replay_count`,
`events`): `list` shows the mark and `replay` skips marked letters unless forced. The letter
itself stays: it is the record of what failed and why. Marks live in their own table because a
redelivered batch rewrites its dead-letter rows whole, which would erase a column set on them.
The mark is written after the publish: a crash in between means a later replay publishes
again, which is harmless for the reason above.

Payloads are decoded with the scorer's validation (`shared.events.decode_event`, the ingest
rules without the 7-day window: replaying old data is the point). One that still fails is
reported with the reason and left unmarked.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Protocol

from azure.core.exceptions import (
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.data.tables import TableServiceClient, UpdateMode

from shared.errors import (
    ConfigError,
    FleetscoreError,
    PermanentError,
    TransientError,
    ValidationError,
)
from shared.events import decode_event, encode_device_events
from shared.publisher import EventPublisher
from shared.readings import format_timestamp
from shared.store import PredictionPage

__all__ = [
    "MAX_DAYS",
    "REPLAYED_TABLE",
    "DeadLetterNotFound",
    "InMemoryReplayLog",
    "LetterSource",
    "ReplayLog",
    "ReplayMark",
    "ReplayOutcome",
    "TableReplayLog",
    "days_between",
    "get_letter",
    "list_letters",
    "replay_letters",
]

REPLAYED_TABLE = "DeadLettersReplayed"
MAX_DAYS = 366  # a range scan reads every row of every day: keep an operator's typo bounded
_PAGE = 1000


class DeadLetterNotFound(FleetscoreError):
    """No dead letter with that id on that day."""


class LetterSource(Protocol):
    """What this module reads from the table store (`shared.store` implements it)."""

    def list_dead_letters(
        self, day: date, *, limit: int = 100, after: str | None = None
    ) -> PredictionPage:
        """Return one page of a UTC day's dead letters, by id."""
        ...


@dataclass(frozen=True, slots=True)
class ReplayMark:
    """That a dead letter was replayed: when last, how often, into how many events."""

    replayed_at: str
    replay_count: int
    events: int


class ReplayLog(Protocol):
    """Where replay marks are kept."""

    def get_marks(self, day: date) -> dict[str, ReplayMark]:
        """Return the marks of one day's letters by letter id."""
        ...

    def upsert_mark(self, day: date, letter_id: str, mark: ReplayMark) -> None:
        """Store (replace) one letter's mark."""
        ...


class InMemoryReplayLog:
    """Marks in a dict, for tests and dry runs."""

    def __init__(self) -> None:
        self.marks: dict[tuple[str, str], ReplayMark] = {}

    def get_marks(self, day: date) -> dict[str, ReplayMark]:
        """Return one day's marks."""
        pk = day.strftime("%Y%m%d")
        return {rk: m for (p, rk), m in self.marks.items() if p == pk}

    def upsert_mark(self, day: date, letter_id: str, mark: ReplayMark) -> None:
        """Replace one mark."""
        self.marks[(day.strftime("%Y%m%d"), letter_id)] = mark


class TableReplayLog:
    """Marks in the `<prefix>DeadLettersReplayed` table (created on first use)."""

    def __init__(self, service: TableServiceClient, *, table_prefix: str = "") -> None:
        self.table_name = f"{table_prefix}{REPLAYED_TABLE}"
        self._service = service
        self._client = service.get_table_client(self.table_name)
        self._created = False

    @classmethod
    def from_connection_string(cls, conn: str, *, table_prefix: str = "") -> TableReplayLog:
        """Build from a storage connection string (never logged: it holds the account key)."""
        try:
            service = TableServiceClient.from_connection_string(
                conn, retry_total=3, retry_backoff_factor=0.2, connection_timeout=5, read_timeout=30
            )
        except ValueError:
            raise ConfigError("TABLES_CONNECTION", "is not a valid connection string") from None
        return cls(service, table_prefix=table_prefix)

    def close(self) -> None:
        """Close the HTTP session."""
        self._service.close()

    def get_marks(self, day: date) -> dict[str, ReplayMark]:
        """Return one day's marks; a missing table means none."""
        try:
            rows = list(
                self._client.query_entities(
                    "PartitionKey eq @pk", parameters={"pk": day.strftime("%Y%m%d")}
                )
            )
        except ResourceNotFoundError:
            return {}
        except (HttpResponseError, ServiceRequestError, ServiceResponseError) as exc:
            raise _mapped(exc, "read replay marks") from exc
        return {
            r["RowKey"]: ReplayMark(r["replayed_at"], int(r["replay_count"]), int(r["events"]))
            for r in rows
        }

    def upsert_mark(self, day: date, letter_id: str, mark: ReplayMark) -> None:
        """Replace one letter's mark."""
        entity = {
            "PartitionKey": day.strftime("%Y%m%d"),
            "RowKey": letter_id,
            "replayed_at": mark.replayed_at,
            "replay_count": mark.replay_count,
            "events": mark.events,
        }
        try:
            if not self._created:
                self._service.create_table_if_not_exists(self.table_name)
                self._created = True
            self._client.upsert_entity(entity, mode=UpdateMode.REPLACE)
        except (HttpResponseError, ServiceRequestError, ServiceResponseError) as exc:
            raise _mapped(exc, "write a replay mark") from exc


def _mapped(exc: Exception, action: str) -> FleetscoreError:
    status = getattr(exc, "status_code", None)
    if not isinstance(exc, HttpResponseError):
        return TransientError(f"table storage unreachable ({action}): {type(exc).__name__}")
    if status is None or status in (408, 429) or status >= 500:
        return TransientError(f"table storage failed to {action}: {type(exc).__name__}")
    return PermanentError(f"table storage refused to {action}: {status}", status=status)


def days_between(start: date, end: date) -> list[date]:
    """Every UTC day from `start` to `end`, both included.

    Raises:
        ValueError: when `end` is before `start` or the range is over `MAX_DAYS` days.
    """
    if end < start:
        raise ValueError(f"--to {end} is before --from {start}")
    count = (end - start).days + 1
    if count > MAX_DAYS:
        raise ValueError(f"{count} days; at most {MAX_DAYS} in one command")
    return [start + timedelta(days=i) for i in range(count)]


def _day_letters(store: LetterSource, day: date) -> Iterator[dict[str, Any]]:
    after: str | None = None
    while True:
        page = store.list_dead_letters(day, limit=_PAGE, after=after)
        yield from page.items
        if page.next_after is None:
            return
        after = page.next_after


def _with_mark(item: dict[str, Any], day: date, mark: ReplayMark | None) -> dict[str, Any]:
    return {
        **item,
        "date": day.isoformat(),
        "replayed_at": mark.replayed_at if mark else None,
        "replay_count": mark.replay_count if mark else 0,
    }


def _matches(item: dict[str, Any], source: str | None, reason: str | None) -> bool:
    if source is not None and source.lower() not in str(item["source"]).lower():
        return False
    return reason is None or reason.lower() in str(item["reason"]).lower()


def list_letters(
    store: LetterSource,
    marks: ReplayLog,
    days: Sequence[date],
    *,
    source: str | None = None,
    reason: str | None = None,
    limit: int | None = 100,
    newest_first: bool = True,
) -> list[dict[str, Any]]:
    """Return the matching letters of `days`, with `date`, `replayed_at` and `replay_count`.

    Order is by `occurred_at` (then id): the store keeps a day by id, so each day is read
    whole, page by page, and sorted here. Source and reason filters are case-insensitive
    substrings. `limit` None means all.
    """
    if limit is not None and limit < 1:
        raise ValueError("limit must be at least 1")
    out: list[dict[str, Any]] = []
    for day in sorted(days, reverse=newest_first):
        day_marks = marks.get_marks(day)
        found = [
            _with_mark(item, day, day_marks.get(item["id"]))
            for item in _day_letters(store, day)
            if _matches(item, source, reason)
        ]
        found.sort(key=lambda i: (i["occurred_at"] or "", i["id"]), reverse=newest_first)
        out += found
        if limit is not None and len(out) >= limit:
            return out[:limit]
    return out


def get_letter(store: LetterSource, marks: ReplayLog, day: date, letter_id: str) -> dict[str, Any]:
    """Return one letter in full, with its replay mark.

    Raises:
        DeadLetterNotFound: no such id on that day.
    """
    for item in _day_letters(store, day):
        if item["id"] == letter_id:
            return _with_mark(item, day, marks.get_marks(day).get(letter_id))
    raise DeadLetterNotFound(f"no dead letter {letter_id!r} on {day.isoformat()}")


@dataclass(frozen=True, slots=True)
class ReplayOutcome:
    """What replay did with one letter.

    `status`: `replayed`, `would_replay` (dry run), `skipped` (already replayed), `invalid`
    (the payload still fails; left in place), `failed` (the hub refused; left unmarked) or
    `not_found`.
    """

    id: str
    date: str | None
    status: str
    device_id: str | None = None
    readings: int = 0
    events: int = 0
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the outcome as one JSON object."""
        return {
            "id": self.id,
            "date": self.date,
            "status": self.status,
            "device_id": self.device_id,
            "readings": self.readings,
            "events": self.events,
            "reason": self.reason,
        }


@dataclass(slots=True)
class _Plan:
    letters: list[dict[str, Any]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def _chosen(
    store: LetterSource,
    marks: ReplayLog,
    days: Sequence[date],
    ids: Iterable[str] | None,
    source: str | None,
    reason: str | None,
) -> _Plan:
    letters = list_letters(
        store, marks, days, source=source, reason=reason, limit=None, newest_first=False
    )
    if ids is None:
        return _Plan(letters)
    wanted = list(dict.fromkeys(ids))
    by_id = {item["id"]: item for item in letters}
    return _Plan([by_id[i] for i in wanted if i in by_id], [i for i in wanted if i not in by_id])


def _replay_one(
    item: dict[str, Any],
    marks: ReplayLog,
    publisher: EventPublisher | None,
    *,
    now: datetime,
    dry_run: bool,
    force: bool,
) -> ReplayOutcome:
    base = {"id": item["id"], "date": item["date"], "device_id": item.get("device_id")}
    if item["replay_count"] and not force:
        return ReplayOutcome(
            **base,
            status="skipped",
            reason=f"already replayed at {item['replayed_at']}; --force replays it again",
        )
    if item.get("payload_truncated"):
        return ReplayOutcome(
            **base,
            status="invalid",
            reason=f"payload was truncated when stored ({item.get('payload_bytes')} bytes)",
        )
    try:
        device_id, readings = decode_event(str(item["payload"]).encode("utf-8", "surrogatepass"))
    except (ValidationError, UnicodeEncodeError) as exc:
        return ReplayOutcome(**base, status="invalid", reason=f"payload still invalid: {exc}")
    events = encode_device_events({device_id: readings}, ingested_at=now)
    base["device_id"] = device_id
    counts = {"readings": len(readings), "events": len(events)}
    if dry_run or publisher is None:
        return ReplayOutcome(**base, **counts, status="would_replay")
    try:
        publisher.publish(events)
    except (TransientError, PermanentError) as exc:
        return ReplayOutcome(**base, **counts, status="failed", reason=str(exc))
    day = date.fromisoformat(item["date"])
    mark = ReplayMark(format_timestamp(now), int(item["replay_count"]) + 1, len(events))
    marks.upsert_mark(day, item["id"], mark)
    return ReplayOutcome(**base, **counts, status="replayed")


def replay_letters(
    store: LetterSource,
    marks: ReplayLog,
    publisher: EventPublisher | None,
    days: Sequence[date],
    *,
    now: datetime,
    ids: Iterable[str] | None = None,
    source: str | None = None,
    reason: str | None = None,
    dry_run: bool = False,
    force: bool = False,
) -> list[ReplayOutcome]:
    """Publish the readings of chosen letters (by id, else all matching) to the hub again.

    One outcome per chosen letter, oldest first, then one `not_found` per id not in `days`.
    A dry run (or no publisher) decodes and reports but publishes and marks nothing.
    """
    plan = _chosen(store, marks, days, ids, source, reason)
    outcomes = [
        _replay_one(item, marks, publisher, now=now, dry_run=dry_run, force=force)
        for item in plan.letters
    ]
    span = f"{days[0].isoformat()}..{days[-1].isoformat()}" if days else "no days"
    outcomes += [
        ReplayOutcome(i, None, "not_found", reason=f"no dead letter with this id in {span}")
        for i in plan.missing
    ]
    return outcomes
