"""The `deadletters` subcommand of `python -m fleetscore`: arguments, settings and output.

The work itself (listing, showing, replaying) is in `fleetscore/deadletters.py`; this module
turns command-line arguments and app settings into calls to it and prints what happened.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from shared.errors import ConfigError, FleetscoreError
from shared.publisher import EventHubPublisher, EventPublisher
from shared.settings import SETTINGS
from shared.store import TableStore

from .deadletters import (
    LetterSource,
    ReplayLog,
    ReplayOutcome,
    TableReplayLog,
    days_between,
    get_letter,
    list_letters,
    replay_letters,
)

__all__ = [
    "DEMO_SETTINGS",
    "Backends",
    "CliSettings",
    "add_deadletters_parser",
    "connect",
    "run_deadletters",
]

DEMO_SETTINGS = Path(".local/demo/local.settings.json")

_LIST_HEADER = f"{'DATE':<10}  {'OCCURRED_AT':<24}  {'ID':<32}  {'SOURCE':<6}  {'DEVICE':<16}  "
_LIST_HEADER += "REPLAYED  REASON"


@dataclass(frozen=True, slots=True)
class CliSettings:
    """The few app settings `deadletters` needs, named as in the function app."""

    tables_connection: str
    table_prefix: str
    eventhub_connection: str
    eventhub_name: str

    def __repr__(self) -> str:
        return f"CliSettings(table_prefix={self.table_prefix!r}, eventhub={self.eventhub_name!r})"


@dataclass(slots=True)
class Backends:
    """The store, the replay marks and a lazy publisher; `close` releases them."""

    store: LetterSource
    marks: ReplayLog
    publisher: Callable[[], EventPublisher]
    close: Callable[[], None] = lambda: None


def connect(settings: CliSettings) -> Backends:
    """Real clients on Table Storage and Event Hubs; the hub connects only when replaying."""
    store = TableStore.from_connection_string(
        settings.tables_connection, table_prefix=settings.table_prefix
    )
    marks = TableReplayLog.from_connection_string(
        settings.tables_connection, table_prefix=settings.table_prefix
    )
    made: list[EventPublisher] = []

    def publisher() -> EventPublisher:
        if not settings.eventhub_connection:
            raise ConfigError(
                "EVENTHUB_CONNECTION", "is required to replay (set it or pass --settings)"
            )
        made.append(
            EventHubPublisher.from_connection_string(
                settings.eventhub_connection, eventhub_name=settings.eventhub_name
            )
        )
        return made[-1]

    def close() -> None:
        for closable in (store, marks, *made):
            closable.close()

    return Backends(store, marks, publisher, close)


def _values(args: argparse.Namespace, env: Mapping[str, str]) -> dict[str, str]:
    """The environment, with a settings file's `Values` filling what it does not set."""
    values: dict[str, str] = {}
    path: Path | None = args.settings or (DEMO_SETTINGS if DEMO_SETTINGS.exists() else None)
    if path is not None:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError("--settings", f"cannot read {path}: {type(exc).__name__}") from None
        values.update({k: str(v) for k, v in doc.get("Values", {}).items()})
    values.update({k: v for k, v in env.items() if v.strip()})
    return values


def cli_settings(values: Mapping[str, str]) -> CliSettings:
    """Read the settings by their app-setting names; defaults come from `shared.settings`.

    Raises:
        ConfigError: naming the missing setting.
    """
    defaults = {s.name: s.default for s in SETTINGS}
    tables = (
        values.get("TABLES_CONNECTION", "").strip() or values.get("AzureWebJobsStorage", "").strip()
    )
    if not tables:
        raise ConfigError(
            "TABLES_CONNECTION",
            "is required (or AzureWebJobsStorage): set it, or pass --settings local.settings.json",
        )
    return CliSettings(
        tables_connection=tables,
        table_prefix=values.get("TABLE_PREFIX", "").strip(),
        eventhub_connection=values.get("EVENTHUB_CONNECTION", "").strip(),
        eventhub_name=values.get("EVENTHUB_NAME", "").strip() or str(defaults["EVENTHUB_NAME"]),
    )


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date YYYY-MM-DD: {text!r}") from None


def _add_settings(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--settings",
        type=Path,
        metavar="FILE",
        help=f"local.settings.json whose Values fill unset settings (default: {DEMO_SETTINGS} "
        "if present)",
    )


def _add_days(parser: argparse.ArgumentParser) -> None:
    _add_settings(parser)
    parser.add_argument("--date", type=_day, metavar="YYYY-MM-DD", help="one UTC day")
    parser.add_argument(
        "--from", dest="start", type=_day, metavar="YYYY-MM-DD", help="first UTC day"
    )
    parser.add_argument(
        "--to", dest="end", type=_day, metavar="YYYY-MM-DD", help="last UTC day (default: today)"
    )
    parser.add_argument("--source", help="only letters whose source contains this (event, model…)")
    parser.add_argument("--reason", help="only letters whose reason contains this")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")


def add_deadletters_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `deadletters list|show|replay` to the CLI."""
    parser = commands.add_parser(
        "deadletters",
        help="list, show and replay dead letters",
        description=(
            "What the score pipeline could not process (poison events, readings the model "
            "refused, rows the table service refused), read from the DeadLetters table. "
            "Replay publishes a letter's readings to the readings hub again once the cause is "
            "fixed; replaying twice stores once. Days are UTC; without --date or --from/--to, "
            "the last 7 days. Settings (app-setting names, from the environment, else the "
            "--settings file): TABLES_CONNECTION or AzureWebJobsStorage, TABLE_PREFIX, and to "
            "replay EVENTHUB_CONNECTION and EVENTHUB_NAME."
        ),
        epilog=(
            "examples:\n"
            "  python -m fleetscore deadletters list --date 2026-11-27 --source model\n"
            "  python -m fleetscore deadletters show 3f2a…  --date 2026-11-27\n"
            "  python -m fleetscore deadletters replay --all --reason 'model refused' --dry-run\n"
            "  python -m fleetscore deadletters replay --id 3f2a… --id 9c01… --date 2026-11-27"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    action = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = action.add_parser("list", help="dead letters with their reason, newest first")
    _add_days(listing)
    listing.add_argument("--limit", type=int, default=50, help="most rows (default: %(default)s)")
    listing.add_argument("--oldest-first", action="store_true", help="ascending time order")
    show = action.add_parser("show", help="one dead letter in full, payload included")
    show.add_argument("id", help="the letter's id (from list)")
    _add_settings(show)
    show.add_argument("--date", type=_day, required=True, metavar="YYYY-MM-DD", help="its day")
    replay = action.add_parser(
        "replay",
        help="publish letters' readings to the hub again",
        description=(
            "Publish the readings of the chosen dead letters to the readings hub again, for the "
            "score function to handle as usual. Letters already replayed are skipped unless "
            "--force; a payload that still fails validation is reported and left in place. "
            "Exit 1 if any letter was invalid, failed or not found."
        ),
    )
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", dest="ids", action="append", metavar="ID", help="repeatable")
    which.add_argument("--all", action="store_true", help="every letter matching the filters")
    _add_days(replay)
    replay.add_argument("--dry-run", action="store_true", help="report, publish nothing")
    replay.add_argument("--force", action="store_true", help="replay already replayed letters")


def _days(args: argparse.Namespace, today: date) -> list[date]:
    if args.date is not None:
        if args.start is not None or args.end is not None:
            raise ValueError("give --date or --from/--to, not both")
        return [args.date]
    end = args.end or today
    return days_between(args.start or end - timedelta(days=6), end)


def _line(item: dict[str, Any]) -> str:
    replayed = f"{item['replay_count']}x" if item["replay_count"] else "-"
    reason = " ".join(str(item["reason"]).split())
    return (
        f"{item['date']:<10}  {item['occurred_at'] or '':<24}  {item['id']:<32}  "
        f"{item['source']:<6}  {item['device_id'] or '-':<16}  {replayed:<8}  {reason[:100]}"
    )


def _print_list(items: list[dict[str, Any]], as_json: bool) -> None:
    if not as_json:
        print(_LIST_HEADER)
    for item in items:
        if as_json:
            brief = {k: v for k, v in item.items() if k != "payload"}
            brief["payload_chars"] = len(item["payload"])
            print(json.dumps(brief, separators=(",", ":")))
        else:
            print(_line(item))
    if not as_json:
        print(f"{len(items)} dead letters", file=sys.stderr)


def _print_outcomes(outcomes: list[ReplayOutcome], as_json: bool, dry_run: bool) -> None:
    for o in outcomes:
        if as_json:
            print(json.dumps(o.to_json(), separators=(",", ":")))
        else:
            what = o.reason or f"{o.readings} readings of {o.device_id} in {o.events} events"
            print(f"{o.status:<12}  {o.id}  {o.date or '-'}  {what}")
    counts = Counter(o.status for o in outcomes)
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "nothing"
    print(f"{'dry run: ' if dry_run else ''}{summary}", file=sys.stderr)


def run_deadletters(
    args: argparse.Namespace,
    *,
    env: Mapping[str, str],
    backends: Callable[[CliSettings], Backends],
    now: datetime,
) -> int:
    """Run `deadletters ...`; 0 on success, 1 when it failed or a letter did, 2 on bad usage."""
    try:
        days = [] if args.action == "show" else _days(args, now.date())
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "limit", 1) < 1:
        print("error: --limit must be at least 1", file=sys.stderr)
        return 2
    try:
        conns = backends(cli_settings(_values(args, env)))
        try:
            if args.action == "list":
                items = list_letters(
                    conns.store,
                    conns.marks,
                    days,
                    source=args.source,
                    reason=args.reason,
                    limit=args.limit,
                    newest_first=not args.oldest_first,
                )
                _print_list(items, args.json)
                return 0
            if args.action == "show":
                print(
                    json.dumps(get_letter(conns.store, conns.marks, args.date, args.id), indent=2)
                )
                return 0
            outcomes = replay_letters(
                conns.store,
                conns.marks,
                None if args.dry_run else conns.publisher(),
                days,
                now=now,
                ids=args.ids,
                source=args.source,
                reason=args.reason,
                dry_run=args.dry_run,
                force=args.force,
            )
        finally:
            conns.close()
    except FleetscoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    _print_outcomes(outcomes, args.json, args.dry_run)
    bad = {"invalid", "failed", "not_found"}
    return 1 if any(o.status in bad for o in outcomes) else 0
