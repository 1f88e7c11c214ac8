"""`python -m dashboard`: run the Power BI stand-in (push API + live page) on 127.0.0.1."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from .history import History
from .limits import Limits
from .server import DashboardServer
from .store import RowStore

log = logging.getLogger("dashboard")


def build_parser() -> argparse.ArgumentParser:
    """The command line; every option has a default that works for the local stack."""
    parser = argparse.ArgumentParser(
        prog="python -m dashboard",
        description="Power BI stand-in: the push-rows REST API with Power BI's limits, rows in "
        "SQLite, and a live page at / updated by server-sent events.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument(
        "--port", type=int, default=7000, help="0 picks a free port (default: %(default)s)"
    )
    parser.add_argument(
        "--db",
        default=".local/dashboard.sqlite3",
        help="SQLite file or :memory: (default: %(default)s)",
    )
    parser.add_argument(
        "--key",
        default=os.environ.get("DASHBOARD_KEY", "fleetscore-local"),
        help="token and push-URL key to accept (default: $DASHBOARD_KEY, else fleetscore-local)",
    )
    parser.add_argument(
        "--dataset",
        default="fleetscore",
        help="push dataset created at start (default: %(default)s)",
    )
    parser.add_argument(
        "--workspace", default="", help="its workspace (group) id; empty = My workspace"
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=60.0,
        help="the sink's POWERBI_INTERVAL_SECONDS (default: %(default)s)",
    )
    parser.add_argument(
        "--fifo-rows", type=int, default=200_000, help="rows kept per basicFIFO table"
    )
    parser.add_argument(
        "--query-url",
        default=os.environ.get("DASHBOARD_QUERY_URL") or None,
        help="the function app's root, e.g. http://127.0.0.1:7071/api: turns on the device's "
        "metrics chart (/history) through the query function ($DASHBOARD_QUERY_URL)",
    )
    parser.add_argument(
        "--query-key",
        default=os.environ.get("DASHBOARD_QUERY_KEY") or None,
        help="the query function's key (prefer $DASHBOARD_QUERY_KEY: argv is visible in ps)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT or SIGTERM; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.query_url and not args.query_key:
        parser.error("--query-url needs --query-key or $DASHBOARD_QUERY_KEY")
    history = History(args.query_url, args.query_key) if args.query_url else None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    store = RowStore(args.db, fifo_rows=args.fifo_rows)
    try:
        server = DashboardServer(
            store,
            key=args.key,
            host=args.host,
            port=args.port,
            limits=Limits(fifo_rows=args.fifo_rows),
            dataset_name=args.dataset,
            workspace=args.workspace,
            interval_seconds=args.interval,
            history=history,
        )
    except OSError as exc:
        store.close()
        print(
            f"dashboard: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr
        )
        return 1

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.close, name="dashboard-stop").start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.start()
    log.info(
        "dashboard serving %s/ (dataset %r id %s, db %s, history from %s)",
        server.url,
        server.dataset.name,
        server.dataset.id,
        args.db,
        args.query_url or "nowhere: no --query-url",
    )
    try:
        server.wait_closed()
    finally:
        store.close()
    log.info("dashboard stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
