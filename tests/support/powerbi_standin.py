"""An in-memory Power BI push dataset for the sink's tests, on the dashboard's own limit logic.

The rules (URL shapes, bearer token and push key, Power BI's documented push limits and their
400/429 answers) live in the product, `dashboard.pushapi` and `dashboard.limits`; this adapter
keeps rows in memory, implements the sink's `Transport` (url, body, headers → status, headers,
body) so a test hands it to `PowerBISink` directly or serves it with `serve()`, and adds what a
test needs: a fake clock, scripted answers, an outage switch, and a record of what it saw.
Every broken limit is recorded in `violations`, so a test can assert that a well-behaved client
never needed refusing.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import requests

from dashboard.limits import Limits, PushError, RateGate, parse_rows
from dashboard.pushapi import check_bearer, check_key, parse_route

__all__ = ["Limits", "PowerBIStandIn", "serve"]

Reply = tuple[int, dict[str, str], bytes]


class PowerBIStandIn:
    """One push dataset with named tables; `clock` is the same (fake) clock the sink uses.

    `token` is the bearer token the REST path accepts; `push_tables` maps the key-bearing push
    URL's dataset id to the table it writes (`key` must equal `push_key`).
    """

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        tables: tuple[str, ...] = ("DeviceAggregates", "Anomalies"),
        dataset_id: str = "ds-1",
        token: str = "token-1",
        push_key: str = "key-1",
        push_tables: dict[str, str] | None = None,
        retention: str = "basicFIFO",
        limits: Limits | None = None,
        down: bool = False,
    ) -> None:
        self.clock, self.dataset_id, self.token, self.push_key = clock, dataset_id, token, push_key
        self.push_tables = push_tables or {}
        self.retention, self.limits, self.down = retention, limits or Limits(), down
        self.violations: list[str] = []
        self.scripted: deque[Reply] = deque()
        self.received: dict[str, list[dict[str, object]]] = {t: [] for t in tables}
        self.stored: dict[str, deque[dict[str, object]]] = {t: deque() for t in tables}
        self.post_times: list[float] = []  # every admitted POST, never pruned
        self.row_log: list[tuple[float, int]] = []
        self._gate = RateGate(self.limits)
        self._lock = threading.Lock()

    @property
    def peak_pending(self) -> int:
        """The most POSTs that were in flight at once."""
        return self._gate.peak_pending

    def __call__(self, url: str, body: bytes, headers: dict[str, str]) -> Reply:
        """Answer one POST rows request as Power BI would."""
        if self.down:
            raise requests.ConnectionError("stand-in is down")
        try:
            with self._gate.pending():
                return self._answer(url, body, {k.lower(): v for k, v in headers.items()})
        except PushError as exc:
            if exc.limit:
                self.violations.append(exc.message)
            return exc.reply()

    def _answer(self, url: str, body: bytes, headers: dict[str, str]) -> Reply:
        parts = urlsplit(url)
        route = parse_route(parts.path)
        if route is None or route.kind not in ("rows", "push"):
            raise PushError(404, "NotFound", "unknown path")
        bare = route.kind == "push"
        if bare:
            check_key(parts.query, self.push_key)
            table = self.push_tables.get(route.dataset_id, "")
        else:
            check_bearer(headers, self.token)
            table = route.table
        if (route.dataset_id != self.dataset_id and not bare) or table not in self.stored:
            raise PushError(404, "ItemNotFound", f"table {table!r} not found")
        with self._lock:
            now = self.clock()
            big = any(len(rows) >= self.limits.big_table_rows for rows in self.stored.values())
            self._gate.admit_post(now, big_table=big)
            self.post_times.append(now)
            if self.scripted:
                return self.scripted.popleft()
            rows = parse_rows(body, bare=bare, limits=self.limits)
            self._gate.admit_rows(now, len(rows))
            self.row_log.append((now, len(rows)))
            self.received[table].extend(rows)
            stored = self.stored[table]
            stored.extend(rows)
            while self.retention == "basicFIFO" and len(stored) > self.limits.fifo_rows:
                stored.popleft()
            return 200, {}, b""


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
