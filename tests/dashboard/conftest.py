from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dashboard.limits import Limits
from dashboard.server import DashboardServer
from dashboard.store import RowStore

KEY = "test-key-1"
Factory = Callable[..., DashboardServer]


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
