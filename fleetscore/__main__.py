"""`python -m fleetscore`: the operator CLI.

`query devices <id>` and `query anomalies --date` read stored predictions through the query
function (HTTP, with the function key), printing one JSON object per line, so the output pipes
into `jq` or a file. The URL and key default to the local demo's generated settings file.

`deadletters list|show|replay` reads Table Storage directly and replays through Event Hubs
(`fleetscore/deadletters_cli.py`, over `fleetscore/deadletters.py`); its settings are the
function app's.

`plan --devices N --interval 10s` sizes the deployment for a fleet from measured figures and
Azure's documented limits, showing its arithmetic (`fleetscore/plan_cli.py`, over
`fleetscore/plan.py`).

`powerbi create-dataset` creates the Power BI push dataset the score function streams to, or
checks the one that exists (`fleetscore/powerbi_cli.py`, over `fleetscore/powerbi_dataset.py`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import requests

from .deadletters_cli import (
    DEMO_SETTINGS,
    Backends,
    CliSettings,
    add_deadletters_parser,
    connect,
    run_deadletters,
)
from .plan_cli import add_plan_parser, run_plan
from .powerbi_cli import add_powerbi_parser, run_powerbi
from .query import QueryClient, QueryError

__all__ = ["Backends", "CliSettings", "main"]

KEY_VARIABLE = "FLEETSCORE_KEY"
URL_VARIABLE = "FLEETSCORE_API_URL"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fleetscore",
        description="fleetscore operator commands.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    query = commands.add_parser(
        "query",
        help="read stored predictions through the query function",
        description=(
            "Read stored predictions through the query function's HTTP API; prints one JSON "
            "object per line. Connection: --url and --key, else $FLEETSCORE_API_URL and "
            "$FLEETSCORE_KEY, else the local demo's settings file (its port and FUNCTIONS_KEY)."
        ),
        epilog=(
            "examples:\n"
            "  python -m fleetscore query devices pump-0000 --limit 5\n"
            "  python -m fleetscore query devices fan-0002 --from 2026-11-27T00:00:00Z "
            "--to 2026-11-27T06:00:00Z --anomalies-only\n"
            "  python -m fleetscore query anomalies --date 2026-11-27"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    query.add_argument(
        "--url", help=f"functions root, e.g. http://127.0.0.1:7071/api (${URL_VARIABLE})"
    )
    query.add_argument(
        "--key", help=f"function key (prefer ${KEY_VARIABLE}: argv is visible to others)"
    )
    query.add_argument(
        "--settings",
        type=Path,
        default=DEMO_SETTINGS,
        help="local.settings.json to take the port and FUNCTIONS_KEY from (default: %(default)s)",
    )
    what = query.add_subparsers(dest="what", required=True, metavar="WHAT")
    devices = what.add_parser("devices", help="one device's predictions, oldest first")
    devices.add_argument("device_id", help="e.g. pump-0000")
    devices.add_argument(
        "--from",
        dest="start",
        metavar="TIME",
        help="ISO 8601, inclusive (default: 24 h before --to)",
    )
    devices.add_argument(
        "--to", dest="end", metavar="TIME", help="ISO 8601, exclusive (default: now)"
    )
    devices.add_argument("--limit", type=int, default=100, help="most rows (default: %(default)s)")
    devices.add_argument(
        "--anomalies-only", action="store_true", help="only rows flagged is_anomaly"
    )
    devices.add_argument("--newest-first", action="store_true", help="descending time order")
    anomalies = what.add_parser("anomalies", help="one day's anomalies across the fleet")
    anomalies.add_argument("--date", required=True, metavar="YYYY-MM-DD", help="UTC day")
    anomalies.add_argument(
        "--limit", type=int, default=100, help="most rows (default: %(default)s)"
    )
    add_deadletters_parser(commands)
    add_plan_parser(commands)
    add_powerbi_parser(commands)
    return parser


def _connection(args: argparse.Namespace) -> tuple[str, str]:
    """(api url, key) from the flags, the environment, then the settings file."""
    url, key = args.url or os.environ.get(URL_VARIABLE), args.key or os.environ.get(KEY_VARIABLE)
    if (url and key) or not args.settings.exists():
        if not (url and key):
            raise QueryError(
                f"no {'URL' if not url else 'key'}: pass --url/--key, set {URL_VARIABLE}/"
                f"{KEY_VARIABLE}, or run `make demo` (which writes {args.settings})"
            )
        return url, key
    doc = json.loads(args.settings.read_text())
    port = doc.get("Host", {}).get("LocalHttpPort", 7071)
    return url or f"http://127.0.0.1:{port}/api", key or doc.get("Values", {}).get(
        "FUNCTIONS_KEY", ""
    )


def _query(args: argparse.Namespace) -> int:
    """Run `query ...`; 0 on success, 1 when the query failed, 2 on bad usage."""
    if args.limit < 1:
        print("error: --limit must be at least 1", file=sys.stderr)
        return 2
    try:
        url, key = _connection(args)
        client = QueryClient(url, key)
        try:
            if args.what == "devices":
                items = client.list_predictions(
                    args.device_id,
                    start=args.start,
                    end=args.end,
                    anomalies_only=args.anomalies_only,
                    newest_first=args.newest_first,
                    limit=args.limit,
                )
            else:
                items = client.list_anomalies(args.date, limit=args.limit)
        finally:
            client.close()
    except QueryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for item in items:
        print(json.dumps(item, separators=(",", ":")))
    return 0


def main(
    argv: Sequence[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    backends: Callable[[CliSettings], Backends] | None = None,
    now: datetime | None = None,
    session: requests.Session | None = None,
) -> int:
    """Run one command; 0 on success, 1 when it failed, 2 on bad usage (`powerbi`: 3 differs).

    `env`, `backends`, `now` and `session` default to the process environment, the real Azure
    clients, the clock and a new HTTP session; tests pass stand-ins.
    """
    args = _parser().parse_args(argv)
    if args.command == "plan":
        return run_plan(args)
    if args.command == "powerbi":
        return run_powerbi(args, env=os.environ if env is None else env, session=session)
    if args.command == "deadletters":
        return run_deadletters(
            args,
            env=os.environ if env is None else env,
            backends=backends or connect,
            now=now or datetime.now(UTC),
        )
    return _query(args)


if __name__ == "__main__":
    sys.exit(main())
