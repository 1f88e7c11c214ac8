"""An in-memory Power BI push dataset that enforces the documented push-dataset limits.

It implements the sink's `Transport` (url, body, headers → status, headers, body), so a test
can hand it to `PowerBISink` directly, or serve it over real HTTP with `serve()`. Every broken
limit is answered the way Power BI answers it (429 + `Retry-After` for rate limits, 400 with
an `{"error": {"code", "message"}}` body for bad requests) and recorded in `violations`, so a
test can assert that a well-behaved client never needed refusing.

Limits (learn.microsoft.com/power-bi/developer/embedded/push-datasets-limitations):
10,000 rows per POST; 120 POSTs per minute; 5 pending POSTs; 1,000,000 rows per hour;
120 POSTs per hour once a table holds 250,000 rows; 200,000 rows kept per table under
`basicFIFO`; 4,000 characters per string value.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import requests

__all__ = ["Limits", "PowerBIStandIn", "serve"]

_REST = re.compile(r"/v1\.0/myorg(?:/groups/([^/]+))?/datasets/([^/]+)/tables/([^/]+)/rows")
_PUSH = re.compile(r"/beta/([^/]+)/datasets/([^/]+)/rows")


@dataclass(frozen=True)
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


@dataclass
class PowerBIStandIn:
    """One push dataset with named tables; `clock` is the same (fake) clock the sink uses.

    `token` is the bearer token the REST path accepts; `push_tables` maps the key-bearing push
    URL's dataset id to the table it writes (`key` must equal `push_key`).
    """

    clock: Callable[[], float]
    tables: tuple[str, ...] = ("DeviceAggregates", "Anomalies")
    dataset_id: str = "ds-1"
    token: str = "token-1"
    push_key: str = "key-1"
    push_tables: dict[str, str] = field(default_factory=dict)
    retention: str = "basicFIFO"
    limits: Limits = field(default_factory=Limits)
    violations: list[str] = field(default_factory=list)
    scripted: deque[tuple[int, dict[str, str], bytes]] = field(default_factory=deque)
    down: bool = False
    received: dict[str, list[dict[str, object]]] = field(default_factory=dict)
    stored: dict[str, deque[dict[str, object]]] = field(default_factory=dict)
    post_times: list[float] = field(default_factory=list)
    row_log: list[tuple[float, int]] = field(default_factory=list)
    peak_pending: int = 0
    _pending: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        for name in self.tables:
            self.received[name] = []
            self.stored[name] = deque()

    def __call__(
        self, url: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        """Answer one POST rows request as Power BI would."""
        if self.down:
            raise requests.ConnectionError("stand-in is down")
        with self._lock:
            self._pending += 1
            self.peak_pending = max(self.peak_pending, self._pending)
        try:
            return self._answer(url, body, {k.lower(): v for k, v in headers.items()})
        finally:
            with self._lock:
                self._pending -= 1

    def _answer(
        self, url: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(url)
        rest, push = _REST.fullmatch(parts.path), _PUSH.fullmatch(parts.path)
        if rest:
            dataset, table, bare = unquote(rest.group(2)), unquote(rest.group(3)), False
            auth = headers.get("authorization", "")
            if not auth.startswith("Bearer "):
                return _error(401, "PowerBINotAuthorizedException", "no bearer token")
            if auth != f"Bearer {self.token}":
                return _error(403, "TokenExpired", "access token is not valid")
        elif push:
            dataset, bare = unquote(push.group(2)), True
            table = self.push_tables.get(dataset, "")
            if parse_qs(parts.query).get("key") != [self.push_key]:
                return _error(403, "Unauthorized", "key is missing or wrong")
        else:
            return _error(404, "NotFound", "unknown path")
        if (dataset != self.dataset_id and not bare) or table not in self.stored:
            return _error(404, "ItemNotFound", f"table {table!r} not found")
        with self._lock:
            if self._pending > self.limits.pending_posts:
                return self._refuse("more than 5 pending POST requests")
            now = self.clock()
            recent = [t for t in self.post_times if t > now - 60.0]
            if len(recent) >= self.limits.posts_per_minute:
                return self._refuse("more than 120 POST rows requests in a minute")
            big = any(len(rows) >= self.limits.big_table_rows for rows in self.stored.values())
            hour = [t for t in self.post_times if t > now - 3600.0]
            if big and len(hour) >= self.limits.big_table_posts_per_hour:
                return self._refuse("more than 120 POSTs in an hour on a 250,000-row table")
            self.post_times.append(now)
            if self.scripted:
                return self.scripted.popleft()
            try:
                doc = json.loads(body)
            except ValueError:
                return self._reject("body is not JSON")
            rows = doc if bare else doc.get("rows") if isinstance(doc, dict) else None
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                return self._reject("body must carry an array of row objects")
            if len(rows) > self.limits.rows_per_post:
                return self._reject(f"{len(rows)} rows in one POST; at most 10,000")
            if any(
                isinstance(v, str) and len(v) > self.limits.string_chars
                for r in rows
                for v in r.values()
            ):
                return self._reject("a string value is longer than 4,000 characters")
            added = sum(n for t, n in self.row_log if t > now - 3600.0)
            if added + len(rows) > self.limits.rows_per_hour:
                return self._refuse("more than 1,000,000 rows added in an hour")
            self.row_log.append((now, len(rows)))
            self.received[table].extend(rows)
            stored = self.stored[table]
            stored.extend(rows)
            while self.retention == "basicFIFO" and len(stored) > self.limits.fifo_rows:
                stored.popleft()
            return 200, {}, b""

    def _refuse(self, why: str) -> tuple[int, dict[str, str], bytes]:
        self.violations.append(why)
        status, _, body = _error(429, "TooManyRequests", why)
        return status, {"Retry-After": "60"}, body

    def _reject(self, why: str) -> tuple[int, dict[str, str], bytes]:
        self.violations.append(why)
        return _error(400, "InvalidRequest", why)


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return status, {"Content-Type": "application/json; charset=utf-8"}, body


@contextlib.contextmanager
def serve(standin: PowerBIStandIn) -> Iterator[str]:
    """Serve `standin` over real HTTP on 127.0.0.1; yield its base URL; always shut down."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            url = f"http://{self.headers.get('Host', '')}{self.path}"
            try:
                status, headers, reply = standin(url, body, dict(self.headers.items()))
            except requests.ConnectionError:
                status, headers, reply = 503, {}, b""
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep test output quiet; the URL would carry the push key

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="powerbi-standin", daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5.0)
