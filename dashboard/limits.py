"""Power BI's documented push-dataset limits, enforced the way Power BI answers them.

Source: "Push semantic model limitations" (learn.microsoft.com/power-bi/developer/embedded/
push-datasets-limitations). Per dataset: 10,000 rows per POST, 120 POST rows requests per
minute, 5 pending POSTs, 1,000,000 rows added per hour, and only 120 POSTs per *hour* once a
table holds 250,000 rows or more; `basicFIFO` retention keeps 200,000 rows per table; string
values hold at most 4,000 characters; a dataset has at most 75 tables of at most 75 columns.

Rate limits are refused with 429 and `Retry-After`, bad requests with 400; both carry Power BI's
`{"error": {"code", "message"}}` body. The logic here is plain Python with an injected clock,
so the stand-in used by the sink's tests and the dashboard server share it.
"""

from __future__ import annotations

import json
import math
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = ["Limits", "PushError", "RateGate", "error_body", "parse_rows"]

_MINUTE, _HOUR = 60.0, 3600.0
_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True, slots=True)
class Limits:
    """The documented push-dataset limits; tests may tighten them."""

    rows_per_post: int = 10_000
    posts_per_minute: int = 120
    pending_posts: int = 5
    rows_per_hour: int = 1_000_000
    big_table_rows: int = 250_000
    big_table_posts_per_hour: int = 120
    fifo_rows: int = 200_000
    string_chars: int = 4000
    tables_per_dataset: int = 75
    columns_per_table: int = 75
    retry_after_seconds: int = 60


class PushError(Exception):
    """A request Power BI would refuse: `status`, Power BI's error `code`, a message.

    `limit` is True when a documented limit (not auth or a missing item) caused it.
    """

    def __init__(
        self, status: int, code: str, message: str, *, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after

    @property
    def limit(self) -> bool:
        """True for a broken limit (400 bad rows, 429 rate), False for auth or not found."""
        return self.status in (400, 429)

    def reply(self) -> tuple[int, dict[str, str], bytes]:
        """Return (status, headers, body) as Power BI would answer."""
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        return self.status, headers, error_body(self.code, self.message)


def error_body(code: str, message: str) -> bytes:
    """Power BI's error document: `{"error": {"code": ..., "message": ...}}`."""
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def _bad(message: str) -> PushError:
    return PushError(400, "InvalidRequest", message)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_rows(body: bytes, *, bare: bool, limits: Limits) -> list[dict[str, Any]]:
    """Decode a POST rows body: `{"rows": [...]}` (REST) or a bare array (push URL).

    Raises:
        PushError: 400 when the body is not JSON, holds no array of flat row objects, has more
            rows than one POST may carry, or a string longer than Power BI stores.
    """
    try:
        doc = json.loads(body, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad("body is not JSON") from exc
    rows = doc if bare else doc.get("rows") if isinstance(doc, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise _bad("body must carry an array of row objects")
    if len(rows) > limits.rows_per_post:
        raise _bad(f"{len(rows)} rows in one POST; at most {limits.rows_per_post:,}")
    for row in rows:
        for value in row.values():
            if not isinstance(value, _SCALARS):
                raise _bad("row values must be strings, numbers, booleans or null")
            if isinstance(value, str) and len(value) > limits.string_chars:
                raise _bad(f"a string value is longer than {limits.string_chars:,} characters")
    return rows


class RateGate:
    """One dataset's rate limits: posts per minute/hour, rows per hour, pending requests.

    Logs hold only the last hour, so a long-running server stays small. Thread-safe.
    """

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.peak_pending = 0
        self._pending = 0
        self._posts: deque[float] = deque()
        self._rows: deque[tuple[float, int]] = deque()
        self._rows_in_hour = 0
        self._lock = threading.Lock()

    @contextmanager
    def pending(self) -> Iterator[None]:
        """Count one request in flight; refuse with 429 beyond the pending limit."""
        with self._lock:
            self._pending += 1
            self.peak_pending = max(self.peak_pending, self._pending)
            over = self._pending > self.limits.pending_posts
        try:
            if over:
                raise self._refuse(f"more than {self.limits.pending_posts} pending POST requests")
            yield
        finally:
            with self._lock:
                self._pending -= 1

    def admit_post(self, now: float, *, big_table: bool) -> None:
        """Admit one POST at `now` or refuse it (429) when a posts-per-time limit is reached.

        `big_table` says the dataset holds a table of `big_table_rows` or more, when Power BI
        drops to `big_table_posts_per_hour`.
        """
        with self._lock:
            self._forget(now)
            minute = len(self._posts) - self._count_before(now - _MINUTE)
            if minute >= self.limits.posts_per_minute:
                per = self.limits.posts_per_minute
                raise self._refuse(f"more than {per} POST rows requests in a minute")
            if big_table and len(self._posts) >= self.limits.big_table_posts_per_hour:
                per, rows = self.limits.big_table_posts_per_hour, self.limits.big_table_rows
                raise self._refuse(f"more than {per} POSTs in an hour on a {rows:,}-row table")
            self._posts.append(now)

    def admit_rows(self, now: float, n: int) -> None:
        """Admit `n` rows at `now` or refuse them (429) past the rows-per-hour limit."""
        with self._lock:
            self._forget(now)
            if self._rows_in_hour + n > self.limits.rows_per_hour:
                per = self.limits.rows_per_hour
                raise self._refuse(f"more than {per:,} rows added in an hour")
            self._rows.append((now, n))
            self._rows_in_hour += n

    def _count_before(self, t: float) -> int:
        """Posts at or before `t` (the log is sorted; a minute's tail is short to scan)."""
        inside = 0
        for at in reversed(self._posts):
            if at <= t:
                break
            inside += 1
        return len(self._posts) - inside

    def _forget(self, now: float) -> None:
        while self._posts and self._posts[0] <= now - _HOUR:
            self._posts.popleft()
        while self._rows and self._rows[0][0] <= now - _HOUR:
            self._rows_in_hour -= self._rows.popleft()[1]

    def _refuse(self, message: str) -> PushError:
        seconds = max(1, math.ceil(self.limits.retry_after_seconds))
        return PushError(429, "TooManyRequests", message, retry_after=seconds)
