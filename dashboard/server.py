"""The dashboard's HTTP server: the push API, the live page, its event stream, /healthz.

Routes:
  * `/v1.0/myorg/...` and `/beta/...`: the Power BI push API (`dashboard.pushapi`): GET, POST
    and PUT (a table's schema).
  * `/`: the live page; `/static/*` its files; `/vendor/uplot.*` the chart library from
    ./node_modules (installed by npm with the rest of the local stack; no CDN at run time).
  * `/events?device=ID`: server-sent events, one `snapshot` event on connect, then one per
    change (and every `heartbeat` seconds, so time-based KPIs age without new rows).
  * `/api/snapshot?device=ID`: the same snapshot once, as JSON.
  * `/history?device=ID&minutes=N`: the device's recent readings (metrics, anomaly score)
    through the query function (`dashboard.history`); 404 when no query URL was given.
  * `/healthz`: 200 `{"status": "ok"}` once serving.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .history import History, HistoryError, parse_params
from .limits import Limits
from .live import AGGREGATES, ANOMALIES, FleetView, Hub, series
from .pushapi import FLEET_TABLES, PushApi
from .store import Dataset, RowStore, StoredRow

__all__ = ["DashboardServer"]

log = logging.getLogger(__name__)

_STATIC = Path(__file__).parent / "static"
_NODE_MODULES = Path(__file__).resolve().parents[1] / "node_modules"
_FILES = {
    "/": (_STATIC / "index.html", "text/html; charset=utf-8"),
    "/static/app.js": (_STATIC / "app.js", "text/javascript; charset=utf-8"),
    "/static/app.css": (_STATIC / "app.css", "text/css; charset=utf-8"),
    "/vendor/uplot.js": (_NODE_MODULES / "uplot/dist/uPlot.iife.min.js", "text/javascript"),
    "/vendor/uplot.css": (_NODE_MODULES / "uplot/dist/uPlot.min.css", "text/css"),
}
_MAX_BODY = 32 * 1024 * 1024
_SERIES_POINTS = 240
_MIN_GAP = 0.25


class DashboardServer:
    """The push API and the live page on one ThreadingHTTPServer bound to `host:port`.

    Port 0 picks a free port; `url` tells which. A dataset named `dataset_name` holding the
    fleet's two tables (`basicFIFO`) is created at start unless it exists.

    Args:
        store: rows and datasets.
        key: the bearer token and push-URL key the API accepts.
        interval_seconds: the sink's aggregation interval (readings/s on the page).
        history: the query function's client for `/history`; None turns the route off.
        heartbeat: seconds between snapshots on an idle event stream.
        workspaces: workspace ids the API knows besides `workspace` (others are 404, as in
            Power BI); None accepts any id.
    """

    def __init__(
        self,
        store: RowStore,
        *,
        key: str,
        host: str = "127.0.0.1",
        port: int = 0,
        limits: Limits | None = None,
        dataset_name: str = "fleetscore",
        workspace: str = "",
        interval_seconds: float = 60.0,
        heartbeat: float = 5.0,
        wall: Callable[[], float] = time.time,
        history: History | None = None,
        workspaces: Collection[str] | None = None,
    ) -> None:
        self.store, self.hub, self.heartbeat, self._wall = store, Hub(), heartbeat, wall
        self.history = history
        self.view = FleetView(interval_seconds=interval_seconds)
        known = None if workspaces is None else {*workspaces, workspace} - {""}
        self.api = PushApi(
            store,
            token=key,
            push_key=key,
            limits=limits,
            on_rows=self._arrived,
            workspaces=known,
        )
        self.dataset = self.api.ensure_dataset(dataset_name, FLEET_TABLES, workspace=workspace)
        self._rebuild()
        self._http = ThreadingHTTPServer((host, port), _handler_for(self))
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    @property
    def url(self) -> str:
        """The base URL, e.g. `http://127.0.0.1:7000`."""
        host, port = self._http.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> DashboardServer:
        """Serve in a background thread; return self."""
        self._thread = threading.Thread(
            target=self._http.serve_forever, args=(0.1,), name="dashboard-http", daemon=True
        )
        self._thread.start()
        return self

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Block until `close()` has finished (or `timeout` passes); True once closed."""
        return self._closed.wait(timeout)

    def close(self) -> None:
        """Stop the streams and the server, release the port; the store stays open."""
        self.hub.close()
        if self._thread is not None:
            self._http.shutdown()
            self._thread.join(5.0)
        self._http.server_close()
        self._closed.set()

    def __enter__(self) -> DashboardServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def snapshot(self, device: str | None) -> dict[str, Any]:
        """The page's snapshot plus the chart series of `device` (default: the riskiest)."""
        snap = self.view.snapshot(self._wall())
        if not device and snap["fleet"]:
            device = snap["fleet"][0]["device_id"]
        rows = self.store.device_rows(AGGREGATES, device, limit=_SERIES_POINTS) if device else []
        return {**snap, "device": device or None, "series": series(rows)}

    def device_history(self, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """`/history`'s status and JSON body: readings, or an error naming the bad field."""
        try:
            if self.history is None:
                raise HistoryError(
                    404,
                    "NotConfigured",
                    "no query function: start the dashboard with --query-url and "
                    "DASHBOARD_QUERY_KEY (make demo does)",
                )
            device, minutes = parse_params(query)
            hint = self.view.newest_reading(device)
            return 200, self.history.fetch(device, minutes, newest_hint=hint)
        except HistoryError as exc:
            return exc.status, exc.body()

    def _arrived(self, dataset: Dataset, table: str, rows: Sequence[StoredRow]) -> None:
        self.view.add(table, rows)
        self.hub.notify()

    def _rebuild(self) -> None:
        """Fold what the database already holds into the view (a restart keeps the page)."""
        latest = self.store.latest_per_device(AGGREGATES)
        recent = self.store.tail(AGGREGATES, limit=5000)
        seen = {r.seq for r in recent}
        self.view.add(AGGREGATES, [r for r in latest if r.seq not in seen] + recent)
        self.view.add(ANOMALIES, self.store.tail(ANOMALIES, limit=1000))


def _handler_for(app: DashboardServer) -> type[BaseHTTPRequestHandler]:
    """A request handler class bound to `app`."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "fleetscore-dashboard"

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            if parts.path == "/healthz":
                self._send(200, {"Content-Type": "application/json"}, b'{"status": "ok"}')
            elif parts.path == "/events":
                self._stream(query.get("device"))
            elif parts.path == "/api/snapshot":
                body = json.dumps(app.snapshot(query.get("device"))).encode()
                self._send(200, {"Content-Type": "application/json"}, body)
            elif parts.path == "/history":
                status, doc = app.device_history(query)
                self._send(status, {"Content-Type": "application/json"}, json.dumps(doc).encode())
            elif parts.path in _FILES:
                self._file(*_FILES[parts.path])
            else:
                self._send(*app.api.handle("GET", self.path, dict(self.headers.items()), b""))

        def do_POST(self) -> None:
            self._api_with_body("POST")

        def do_PUT(self) -> None:
            self._api_with_body("PUT")

        def _api_with_body(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > _MAX_BODY:
                self.close_connection = True
                self._send(413, {}, b'{"error":{"code":"RequestEntityTooLarge","message":""}}')
                return
            body = self.rfile.read(length)
            self._send(*app.api.handle(method, self.path, dict(self.headers.items()), body))

        def _file(self, path: Path, content_type: str) -> None:
            if not path.is_file():
                hint = b"not installed: run `make setup` (npm ci) for ./node_modules"
                self._send(404, {"Content-Type": "text/plain"}, hint)
                return
            self._send(200, {"Content-Type": content_type}, path.read_bytes())

        def _stream(self, device: str | None) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            seen = -1
            try:
                self.wfile.write(b"retry: 2000\n\n")
                while not app.hub.closed:
                    version = app.hub.wait(seen, app.heartbeat)
                    if app.hub.closed:
                        break
                    data = json.dumps(app.snapshot(device), separators=(",", ":"))
                    self.wfile.write(f"event: snapshot\ndata: {data}\n\n".encode())
                    self.wfile.flush()
                    seen = version
                    app.hub.pause(_MIN_GAP)  # at most a few snapshots a second per page
            except ConnectionError:
                pass  # the page went away

        def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Log at DEBUG without query strings: a push URL carries its key there."""
            log.debug("%s %s", self.command, urlsplit(self.path).path)

    return Handler
