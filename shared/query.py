"""The query API core: validate a request's parameters, read one page, shape the answer.

`GET /api/devices/{device_id}/predictions?from=&to=&anomalies_only=&limit=&order=&continuation=`
and `GET /api/anomalies?date=&limit=&continuation=`. Handlers take plain values and return
`(status, body, headers)`, so they are tested without Azure types.

A continuation token is the urlsafe base64 (unpadded) of compact JSON that carries the RowKey to
continue after *and* the query it belongs to. A token replayed with another device, range,
order, filter or day is a 400, never a silently wrong page. When `from`/`to` (or `date`) are
omitted, the token's own values apply, so a client repeating its URL with `continuation`
keeps paging the same window even though "now" has moved on.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any

from .errors import FieldError, PermanentError, TransientError, ValidationError
from .readings import format_timestamp, is_valid_device_id, parse_timestamp
from .store import PredictionPage, PredictionStore

__all__ = [
    "DEFAULT_LIMIT",
    "DEFAULT_SPAN",
    "MAX_LIMIT",
    "MAX_SPAN",
    "Result",
    "handle_anomalies",
    "handle_device_predictions",
    "handle_request",
]

log = logging.getLogger(__name__)

Result = tuple[int, dict[str, Any], dict[str, str]]

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
DEFAULT_SPAN = timedelta(hours=24)
MAX_SPAN = timedelta(days=31)
_DEFAULT_RETRY_AFTER = 5
_MAX_TOKEN = 1024
_IGNORED = frozenset({"code"})  # the function key may come as ?code=; the host checks it
_PREDICTION_PARAMS = frozenset({"from", "to", "anomalies_only", "limit", "order", "continuation"})
_ANOMALY_PARAMS = frozenset({"date", "limit", "continuation"})
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}
_LIMIT = re.compile(r"[0-9]{1,4}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
_PREDICTION_KEY = re.compile(r"[0-9]{8}T[0-9]{6}\.[0-9]{3}Z")
_ANOMALY_KEY = re.compile(r"[0-9]{8}T[0-9]{6}\.[0-9]{3}Z_[A-Za-z0-9_.\-]{1,64}")


def handle_request(
    route: Mapping[str, str | None],
    params: Mapping[str, str],
    *,
    store: PredictionStore,
    now: datetime,
) -> Result:
    """Dispatch on the route values of `{collection}/{device_id?}/{view?}`."""
    collection, device_id, view = (route.get(k) or "" for k in ("collection", "device_id", "view"))
    if collection == "devices" and device_id and view == "predictions":
        return handle_device_predictions(device_id, params, store=store, now=now)
    if collection == "anomalies" and not device_id and not view:
        return handle_anomalies(params, store=store, now=now)
    return _error(
        404,
        "not_found",
        "no such resource: use /api/devices/{device_id}/predictions or /api/anomalies",
    )


def handle_device_predictions(
    device_id: str, params: Mapping[str, str], *, store: PredictionStore, now: datetime
) -> Result:
    """One page of a device's predictions, oldest first unless `order=desc`.

    Returns:
        200 `{"device_id", "items", "continuation"}`; 400 naming every bad parameter; 503 with
        `Retry-After` when storage is unavailable; 502 when storage refuses the query.
    """
    errors = _unknown(params, _PREDICTION_PARAMS)
    if not is_valid_device_id(device_id):
        errors.append(FieldError("device_id", "must be 1-64 characters of A-Z a-z 0-9 _ . -"))
    limit = _limit(params, errors)
    anomalies_only = _boolean(params, "anomalies_only", errors)
    order = params.get("order", "asc")
    if order not in ("asc", "desc"):
        errors.append(FieldError("order", "must be asc or desc"))
    start = _timestamp(params, "from", errors)
    end = _timestamp(params, "to", errors)
    token = _token(params, errors)
    if errors:
        return _invalid(errors)

    after: str | None = None
    if token is not None:
        if token.keys() != {"k", "d", "f", "t", "o", "a"} or not _PREDICTION_KEY.fullmatch(
            str(token["k"])
        ):
            return _invalid([FieldError("continuation", "is not a predictions token")])
        start = start or _token_time(token["f"])
        end = end or _token_time(token["t"])
        after = token["k"]
    end = end or _to_ms(now)
    if start is None:
        try:
            start = end - DEFAULT_SPAN
        except OverflowError:  # `to` within a day of the calendar's start
            return _invalid([FieldError("to", "is too early: from would be before year 1")])
    if start >= end:
        errors.append(FieldError("from", "must be before to"))
    elif end - start > MAX_SPAN:
        errors.append(FieldError("to", "must be at most 31 days after from"))
    query = {
        "d": device_id,
        "f": format_timestamp(start),
        "t": format_timestamp(end),
        "o": order,
        "a": anomalies_only,
    }
    if token is not None and any(
        token[k] != v or type(token[k]) is not type(v) for k, v in query.items()
    ):
        errors.append(FieldError("continuation", "belongs to another query"))
    if errors:
        return _invalid(errors)

    def read() -> PredictionPage:
        return store.list_predictions(
            device_id,
            start=start,
            end=end,
            anomalies_only=anomalies_only,
            limit=limit,
            newest_first=order == "desc",
            after=after,
        )

    return _respond(read, {"device_id": device_id}, query)


def handle_anomalies(params: Mapping[str, str], *, store: PredictionStore, now: datetime) -> Result:
    """One page of a UTC day's anomalies across the fleet, in time order (default: today).

    Returns:
        200 `{"date", "items", "continuation"}`, or the error statuses of
        `handle_device_predictions`.
    """
    errors = _unknown(params, _ANOMALY_PARAMS)
    limit = _limit(params, errors)
    day: date | None = None
    raw = params.get("date")
    if raw is not None:
        try:
            if not _DATE.fullmatch(raw):
                raise ValueError(raw)
            day = date.fromisoformat(raw)
        except ValueError:
            errors.append(FieldError("date", "must be a date YYYY-MM-DD"))
    token = _token(params, errors)
    if errors:
        return _invalid(errors)

    after: str | None = None
    if token is not None:
        if token.keys() != {"k", "day"} or not _ANOMALY_KEY.fullmatch(str(token["k"])):
            return _invalid([FieldError("continuation", "is not an anomalies token")])
        if day is None and isinstance(token["day"], str) and _DATE.fullmatch(token["day"]):
            day = date.fromisoformat(token["day"])
        after = token["k"]
    day = day or now.astimezone(UTC).date()
    query = {"day": day.isoformat()}
    if token is not None and token["day"] != query["day"]:
        return _invalid([FieldError("continuation", "belongs to another query")])

    def read() -> PredictionPage:
        return store.list_anomalies(day, limit=limit, after=after)

    return _respond(read, {"date": query["day"]}, query)


# --- helpers -------------------------------------------------------------------------------


def _respond(
    read: Callable[[], PredictionPage], head: dict[str, Any], query: dict[str, Any]
) -> Result:
    try:
        page = read()
    except TransientError as exc:
        log.warning("query %s: storage unavailable: %s", head, exc)
        retry = exc.retry_after
        if retry is None or not math.isfinite(retry):
            retry = _DEFAULT_RETRY_AFTER
        seconds = max(1, math.ceil(retry))
        return _error(
            503, "unavailable", f"storage is unavailable; retry in {seconds} s", seconds=seconds
        )
    except PermanentError as exc:
        log.error("query %s: storage refused: %s", head, exc)
        return _error(502, "storage", "storage refused the query")
    token = None if page.next_after is None else _encode({**query, "k": page.next_after})
    log.info("query %s: %d items, more=%s", head, len(page.items), token is not None)
    return 200, {**head, "items": page.items, "continuation": token}, {}


def _error(status: int, code: str, message: str, *, seconds: int | None = None) -> Result:
    headers = {} if seconds is None else {"Retry-After": str(seconds)}
    return status, {"error": code, "message": message}, headers


def _invalid(errors: list[FieldError]) -> Result:
    return 400, {"error": "validation", "details": [e.to_dict() for e in errors]}, {}


def _unknown(params: Mapping[str, str], known: frozenset[str]) -> list[FieldError]:
    return [
        FieldError(name[:64], "unknown parameter")
        for name in sorted(params)
        if name not in known and name not in _IGNORED
    ]


def _limit(params: Mapping[str, str], errors: list[FieldError]) -> int:
    raw = params.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if _LIMIT.fullmatch(raw) and 1 <= int(raw) <= MAX_LIMIT:
        return int(raw)
    errors.append(FieldError("limit", f"must be an integer from 1 to {MAX_LIMIT}"))
    return DEFAULT_LIMIT


def _boolean(params: Mapping[str, str], name: str, errors: list[FieldError]) -> bool:
    raw = params.get(name)
    if raw is None:
        return False
    value = _BOOLEANS.get(raw.lower())
    if value is None:
        errors.append(FieldError(name, "must be true, false, 1 or 0"))
        return False
    return value


def _timestamp(params: Mapping[str, str], name: str, errors: list[FieldError]) -> datetime | None:
    raw = params.get(name)
    if raw is None:
        return None
    try:
        return parse_timestamp(raw, name)
    except ValidationError as exc:
        errors.extend(exc.details)
        return None


def _to_ms(ts: datetime) -> datetime:
    ts = ts.astimezone(UTC)
    return ts.replace(microsecond=ts.microsecond - ts.microsecond % 1000)


def _encode(doc: Mapping[str, Any]) -> str:
    text = json.dumps(doc, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def _token(params: Mapping[str, str], errors: list[FieldError]) -> dict[str, Any] | None:
    """Decode strictly: only a token this module produced, byte for byte, is accepted."""
    raw = params.get("continuation")
    if raw is None:
        return None
    try:
        if len(raw) > _MAX_TOKEN or not _TOKEN.fullmatch(raw):
            raise ValueError("alphabet")
        doc = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        if not isinstance(doc, dict) or _encode(doc) != raw:
            raise ValueError("shape")
    except (ValueError, RecursionError, binascii.Error):
        errors.append(FieldError("continuation", "is not a valid continuation token"))
        return None
    return doc


def _token_time(value: object) -> datetime | None:
    try:
        return parse_timestamp(value)
    except ValidationError:
        return None  # then the token's query cannot match and the request is a 400
