"""The Reading contract: parsing and validating sensor readings, and their canonical keys.

A reading is `{"device_id": ..., "timestamp": ..., "metrics": {...}}`. Its identity is
`(device_id, timestamp)` at millisecond precision, which is why timestamps are truncated to
milliseconds on the way in: the Table RowKey holds milliseconds, and two readings that share
a RowKey are the same reading.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .errors import FieldError, RequestError, ValidationError

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_FUTURE",
    "MAX_METRICS",
    "MAX_PAST",
    "MAX_READINGS",
    "Reading",
    "format_timestamp",
    "group_by_device",
    "is_valid_device_id",
    "parse_body",
    "parse_timestamp",
    "row_key",
    "validate_reading",
]

MAX_BODY_BYTES = 1024 * 1024
MAX_READINGS = 5000
MAX_METRICS = 32
MAX_FUTURE = timedelta(minutes=5)
MAX_PAST = timedelta(days=7)

_DEVICE_ID = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_METRIC_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
_READING_KEYS = frozenset({"device_id", "timestamp", "metrics"})


@dataclass(frozen=True, slots=True)
class Reading:
    """One validated reading; `timestamp` is timezone-aware UTC, truncated to milliseconds."""

    device_id: str
    timestamp: datetime
    metrics: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        """Return the reading as it travels in events and scoring requests (no device_id)."""
        return {"timestamp": format_timestamp(self.timestamp), "metrics": self.metrics}


def is_valid_device_id(value: object) -> bool:
    """Return True if `value` is a device id safe as a PartitionKey and inside OData."""
    return isinstance(value, str) and _DEVICE_ID.fullmatch(value) is not None


# The forms below, by the time written: a fleet's devices share their reading times, and each
# is written several times on its way (request, row key, stored field), 3 µs a strftime. A form
# depends on the instant alone, and equal datetimes are the same instant, whatever the offset.
_FORMS: dict[tuple[datetime, str], str] = {}
_FORMS_KEPT = 100_000


def _form(ts: datetime, pattern: str) -> str:
    key = (ts, pattern)
    text = _FORMS.get(key)
    if text is None:
        utc = ts.astimezone(UTC)
        text = utc.strftime(pattern) + f"{utc.microsecond // 1000:03d}Z"
        if len(_FORMS) >= _FORMS_KEPT:
            _FORMS.clear()
        _FORMS[key] = text
    return text


def format_timestamp(ts: datetime) -> str:
    """Return the canonical wire form, e.g. `2026-11-27T07:00:00.000Z`."""
    return _form(ts, "%Y-%m-%dT%H:%M:%S.")


def row_key(ts: datetime) -> str:
    """Return the Table RowKey form `YYYYMMDDTHHMMSS.fffZ`, which sorts in time order."""
    return _form(ts, "%Y%m%dT%H%M%S.")


def parse_timestamp(value: object, field: str = "timestamp") -> datetime:
    """Parse ISO 8601 with a UTC offset into aware UTC, truncated to milliseconds.

    Raises:
        ValidationError: naming `field` when the value is not such a string.
    """
    if not isinstance(value, str):
        raise ValidationError.single(field, "must be an ISO 8601 string with a UTC offset")
    if len(value) > 40 or "T" not in value.upper():
        raise ValidationError.single(field, f"not an ISO 8601 date-time: {value[:40]!r}")
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError.single(field, f"not an ISO 8601 date-time: {value!r}") from None
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValidationError.single(field, f"needs a UTC offset such as Z or +00:00: {value!r}")
    try:
        ts = ts.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 with an offset that crosses the calendar's edge
        raise ValidationError.single(field, f"out of range: {value!r}") from None
    return ts.replace(microsecond=ts.microsecond - ts.microsecond % 1000)


def _metric_value(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        out = float(value)
    except OverflowError:
        return None
    return out if math.isfinite(out) else None


def validate_reading(
    obj: object, *, index: int | None = None, now: datetime | None = None
) -> tuple[Reading | None, list[FieldError]]:
    """Check one reading against the contract, collecting every problem.

    `now` enables the time window (not more than 5 minutes ahead, not older than 7 days);
    the scoring side passes None because a redelivered event may be old by then.

    Returns:
        The reading (or None) and the list of problems, each naming its field.
    """
    if not isinstance(obj, Mapping):
        return None, [FieldError("reading", "must be a JSON object", index)]
    errors: list[FieldError] = []
    for key in obj:
        if key not in _READING_KEYS:
            errors.append(FieldError(str(key)[:64], "unknown field", index))

    device_id = obj.get("device_id")
    if device_id is None:
        errors.append(FieldError("device_id", "is required", index))
    elif not is_valid_device_id(device_id):
        errors.append(
            FieldError("device_id", "must be 1-64 characters of A-Z a-z 0-9 _ . -", index)
        )

    ts: datetime | None = None
    raw_ts = obj.get("timestamp")
    if raw_ts is None:
        errors.append(FieldError("timestamp", "is required", index))
    else:
        try:
            ts = parse_timestamp(raw_ts)
        except ValidationError as exc:
            errors.append(FieldError("timestamp", exc.details[0].message, index))
        if ts is not None and now is not None:
            if ts > now + MAX_FUTURE:
                errors.append(
                    FieldError("timestamp", "is more than 5 minutes in the future", index)
                )
            elif ts < now - MAX_PAST:
                errors.append(FieldError("timestamp", "is older than 7 days", index))

    metrics: dict[str, float] = {}
    raw_metrics = obj.get("metrics")
    if raw_metrics is None:
        errors.append(FieldError("metrics", "is required", index))
    elif not isinstance(raw_metrics, Mapping):
        errors.append(FieldError("metrics", "must be an object of name: number", index))
    elif not 1 <= len(raw_metrics) <= MAX_METRICS:
        errors.append(FieldError("metrics", f"must hold 1 to {MAX_METRICS} entries", index))
    else:
        for name, value in raw_metrics.items():
            if not isinstance(name, str) or _METRIC_NAME.fullmatch(name) is None:
                errors.append(
                    FieldError(
                        f"metrics.{str(name)[:40]}", "name must match [a-z][a-z0-9_]{0,39}", index
                    )
                )
                continue
            number = _metric_value(value)
            if number is None:
                errors.append(FieldError(f"metrics.{name}", "must be a finite number", index))
            else:
                metrics[name] = number

    if errors:
        return None, errors
    assert isinstance(device_id, str)
    assert ts is not None
    return Reading(device_id, ts, metrics), []


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def parse_body(body: bytes, *, now: datetime, content_type: str | None = None) -> list[Reading]:
    """Parse an ingest body (one reading, an array, or `{"readings": [...]}`) and validate it all.

    Raises:
        RequestError: 413 when too large, 415 when not JSON.
        ValidationError: 400 with every offending field when any reading is invalid.
    """
    if len(body) > MAX_BODY_BYTES:
        raise RequestError(413, "too_large", f"body is over {MAX_BODY_BYTES} bytes", field="body")
    if content_type:
        media = content_type.split(";", 1)[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            raise RequestError(
                415,
                "unsupported_media_type",
                f"content-type must be application/json, not {media!r}",
                field="content-type",
            )
    try:
        doc = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise RequestError(415, "not_json", f"body is not JSON: {exc}", field="body") from None

    prefix = ""
    if isinstance(doc, Mapping) and "readings" in doc:
        extra = sorted(k for k in doc if k != "readings")
        if extra:
            raise ValidationError.single(extra[0][:64], "unknown field beside readings")
        items = doc["readings"]
        prefix = "readings"
        if not isinstance(items, list):
            raise ValidationError.single(prefix, "must be an array of readings")
    elif isinstance(doc, list):
        items = doc
    elif isinstance(doc, Mapping):
        items = [doc]
    else:
        raise ValidationError.single(
            "body", "must be a reading, an array of readings, or {readings: [...]}"
        )

    if not items:
        raise ValidationError.single(prefix or "body", "holds no readings")
    if len(items) > MAX_READINGS:
        raise RequestError(
            413,
            "too_many_readings",
            f"{len(items)} readings; at most {MAX_READINGS} per request",
            field=prefix or "body",
        )

    readings: list[Reading] = []
    errors: list[FieldError] = []
    for i, item in enumerate(items):
        reading, problems = validate_reading(item, index=i, now=now)
        if problems:
            errors.extend(problems)
        elif reading is not None:
            readings.append(reading)
    if errors:
        raise ValidationError(errors)
    return readings


def group_by_device(readings: Iterable[Reading]) -> dict[str, list[Reading]]:
    """Group readings by device, keeping each device's readings in arrival order."""
    groups: dict[str, list[Reading]] = {}
    for reading in readings:
        groups.setdefault(reading.device_id, []).append(reading)
    return groups
