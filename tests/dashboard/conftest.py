from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from dashboard.limits import Limits
from dashboard.server import DashboardServer
from dashboard.store import RowStore
from tests.support.http_server import QuietHandler

KEY = "test-key-1"
Factory = Callable[..., DashboardServer]

QUERY_KEY = "query-key-7"
NEWEST = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
WALL = (NEWEST + timedelta(days=2)).timestamp()  # a simulated fleet's clock runs behind


def iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def prediction(device: str, minutes_before_newest: int) -> dict:
    ts = NEWEST - timedelta(minutes=minutes_before_newest)
    return {
        "device_id": device,
        "timestamp": iso(ts),
        "anomaly_score": minutes_before_newest / 10_000,
        "is_anomaly": False,
        "top_metric": None,
        "failure_probability": 0.1,
        "maintenance_due": False,
        "model_version": "m-1",
        "metrics": {"temperature_c": 60.0 + minutes_before_newest, "vibration_mm_s": 2.5},
    }


@dataclass
class QueryStandin:
    """The query function's device route: from/to/order/limit and offset continuations."""

    url: str
    rows: dict[str, list[dict]] = field(default_factory=dict)
    page_size: int = 1000
    status: int = 200
    requests: list[tuple[str, dict[str, str], str | None]] = field(default_factory=list)

    def answer(self, path: str, params: dict[str, str]) -> tuple[int, dict]:
        if self.status != 200:
            return self.status, {"error": {"code": "Unauthorized", "message": "key refused"}}
        device = unquote(path.split("/")[-2])
        start = datetime.fromisoformat(params["from"])
        end = datetime.fromisoformat(params["to"])
        chosen = [
            r
            for r in self.rows.get(device, [])
            if start <= datetime.fromisoformat(r["timestamp"]) < end
        ]
        chosen.sort(key=lambda r: r["timestamp"], reverse=params.get("order") == "desc")
        offset = int(params.get("continuation", "0"))
        limit = min(int(params["limit"]), self.page_size)
        page = chosen[offset : offset + limit]
        more = offset + limit < len(chosen)
        return 200, {
            "device_id": device,
            "items": page,
            "continuation": str(offset + limit) if more else None,
        }


@pytest.fixture
def query_api() -> Iterator[QueryStandin]:
    standin: QueryStandin

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            standin.requests.append((parts.path, params, self.headers.get("x-functions-key")))
            status, doc = standin.answer(parts.path, params)
            self.reply(status, doc)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    standin = QueryStandin(f"http://127.0.0.1:{server.server_address[1]}/api")
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield standin
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def make_dashboard(tmp_path: Path) -> Iterator[Factory]:
    """Start dashboards on free ports with a file database; stop them all afterwards."""
    started: list[tuple[DashboardServer, RowStore]] = []

    def make(*, limits: Limits | None = None, db: str | None = None, **options) -> DashboardServer:
        limits = limits or Limits()
        store = RowStore(db or tmp_path / "dash.sqlite3", fifo_rows=limits.fifo_rows)
        server = DashboardServer(store, key=KEY, limits=limits, heartbeat=0.5, **options).start()
        started.append((server, store))
        return server

    yield make
    for server, store in reversed(started):
        server.close()
        store.close()


@pytest.fixture
def dashboard(make_dashboard: Factory) -> DashboardServer:
    return make_dashboard()
