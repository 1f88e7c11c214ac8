"""`python -m local.host`: run the app's functions on this machine, like `func start`.

HTTP triggers are served on 127.0.0.1; Event Hub triggers read their hubs through the SDK with
checkpoints in `AzureWebJobsStorage`. `--functions`, `--no-http` and `--no-eventhub` choose what
one process runs, so a local stack can start one HTTP host and several score hosts that share
the partitions. Order matters and follows Core Tools: the settings file's `Values` go into the
environment first (a variable already set wins), then the function modules are imported, so a
module that reads a setting at import sees it.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from . import AppConfigError, apply_settings, discover_functions, load_local_settings
from .eventhub import EventHubHost
from .eventhub_config import DEFAULT_CHECKPOINT_CONTAINER
from .http import DEFAULT_MAX_REQUEST_BODY_BYTES, FUNCTION_KEY_HEADER, HttpHost

__all__ = ["main"]

log = logging.getLogger("local.host")

DEFAULT_PORT = 7071
KEY_VARIABLE = "FUNCTIONS_KEY"
MASTER_KEY_VARIABLE = "FUNCTIONS_MASTER_KEY"
# Azure's own app setting for the host's request body limit (functions-app-settings reference).
BODY_LIMIT_VARIABLE = "FUNCTIONS_REQUEST_BODY_SIZE_LIMIT"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m local.host",
        description=(
            "Run the function app the way the Azure Functions host does. HTTP triggers are "
            "served on 127.0.0.1: routes from function.json under host.json's routePrefix, "
            "methods, authLevel keys (x-functions-key header or ?code=), a request body limit, "
            "500 for a function that raises. Event Hub triggers read their hub with the SDK's "
            "consumer, in batches set by host.json's extensions.eventHubs, checkpointing in "
            "AzureWebJobsStorage after each successful call and retrying failures with the "
            "function's retry policy; hosts running the same function share its partitions. "
            "Functions with other triggers are listed and skipped. Stop with Ctrl-C or SIGTERM: "
            "a batch in flight is not checkpointed and is delivered again."
        ),
        epilog=(
            f"Keys: the host key comes from --key, else ${KEY_VARIABLE} (which may also sit in "
            "the settings file's Values), else one is generated and printed once. Prefer the "
            "variable: a --key value is visible to other users in the process list. The master "
            f"key (authLevel admin) comes from --master-key or ${MASTER_KEY_VARIABLE}."
        ),
    )
    parser.add_argument(
        "--app-root",
        metavar="DIR",
        type=Path,
        default=Path(),
        help="folder with host.json and one folder per function (default: current folder)",
    )
    parser.add_argument(
        "--port",
        metavar="PORT",
        type=int,
        default=None,
        help=(
            f"port on 127.0.0.1; 0 picks a free one (default: the settings file's "
            f"Host.LocalHttpPort, else {DEFAULT_PORT})"
        ),
    )
    parser.add_argument(
        "--settings",
        metavar="FILE",
        type=Path,
        default=None,
        help=(
            "local.settings.json whose Values become environment variables before the functions "
            "are imported (default: <app-root>/local.settings.json when it exists)"
        ),
    )
    parser.add_argument(
        "--key", metavar="KEY", default=None, help="host key for authLevel function"
    )
    parser.add_argument(
        "--master-key", metavar="KEY", default=None, help="master key for authLevel admin"
    )
    parser.add_argument(
        "--max-request-body-bytes",
        metavar="BYTES",
        type=int,
        default=None,
        help=(
            "bodies over this are answered 413 before they are read (default: the "
            f"{BODY_LIMIT_VARIABLE} setting, as on Azure, else "
            f"{DEFAULT_MAX_REQUEST_BODY_BYTES}, the documented limit)"
        ),
    )
    parser.add_argument(
        "--functions",
        metavar="NAME",
        nargs="+",
        default=None,
        help=(
            "run only these functions (names or comma-separated lists), e.g. "
            "--functions score_function (default: every function)"
        ),
    )
    parser.add_argument(
        "--no-http",
        action="store_true",
        help="run no HTTP triggers and listen on no port (e.g. an extra score host)",
    )
    parser.add_argument("--no-eventhub", action="store_true", help="run no Event Hub triggers")
    parser.add_argument(
        "--checkpoint-container",
        metavar="NAME",
        default=DEFAULT_CHECKPOINT_CONTAINER,
        help="blob container for Event Hub checkpoints and ownership (default: %(default)s)",
    )
    parser.add_argument(
        "--load-balancing-interval",
        metavar="SECONDS",
        type=float,
        default=10.0,
        help="seconds between partition ownership rounds (default: %(default)s)",
    )
    parser.add_argument(
        "--ownership-expiration",
        metavar="SECONDS",
        type=float,
        default=30.0,
        help=(
            "seconds after which a stopped host's partitions are taken over; a host that "
            "stops cleanly hands them over at once (default: %(default)s)"
        ),
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level (default: %(default)s)",
    )
    return parser


def _methods(methods: frozenset[str] | None) -> str:
    return ",".join(sorted(methods)) if methods else "ALL"


def _selected(args: argparse.Namespace, app_root: Path) -> set[str] | None:
    """The function names `--functions` asks for; None for all.

    Raises:
        AppConfigError: A name that is not a function folder of the app.
    """
    if args.functions is None:
        return None
    wanted = {n.strip() for arg in args.functions for n in arg.split(",") if n.strip()}
    unknown = wanted - {f.name for f in discover_functions(app_root)}
    if unknown:
        raise AppConfigError(f"--functions: no such function in {app_root}: {sorted(unknown)}")
    return wanted


def _body_limit(given: int | None) -> int:
    """The command line's limit, else the app setting Azure's host reads, else 100 MB.

    Raises:
        AppConfigError: the flag or the setting is not a positive whole number.
    """
    if given is not None:
        if given < 1:
            raise AppConfigError(f"--max-request-body-bytes must be at least 1, got {given}")
        return given
    value = os.environ.get(BODY_LIMIT_VARIABLE, "").strip()
    if not value:
        return DEFAULT_MAX_REQUEST_BODY_BYTES
    # isdecimal, not isdigit: "²".isdigit() is True but int("²") raises; ASCII, as Azure reads it.
    if not (value.isascii() and value.isdecimal()) or int(value) < 1:
        raise AppConfigError(f"{BODY_LIMIT_VARIABLE} must be a positive number of bytes: {value!r}")
    return int(value)


def main(argv: Sequence[str] | None = None) -> int:
    """Run until Ctrl-C or SIGTERM; return the process exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="[%(asctime)s] %(levelname)s %(name)s: %(message)s"
    )
    # The SDKs' INFO lines are per AMQP link and HTTP request; the host logs what matters.
    logging.getLogger("azure").setLevel("INFO" if args.log_level == "DEBUG" else "WARNING")
    app_root = args.app_root.resolve()
    settings_path = args.settings
    if settings_path is None and (app_root / "local.settings.json").exists():
        settings_path = app_root / "local.settings.json"
    port = args.port
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Handlers first: a SIGTERM during start-up still ends in a clean stop.
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    http: HttpHost | None = None
    hubs: EventHubHost | None = None
    key: str | None = None
    generated = False
    try:
        try:
            if settings_path is not None:
                settings = load_local_settings(settings_path)
                for name in apply_settings(settings.values):
                    print(f"Skipping '{name}' from local settings: already set in the environment.")
                if port is None:
                    port = settings.local_http_port
            port = DEFAULT_PORT if port is None else port
            selected = _selected(args, app_root)
            if not args.no_http:
                key = args.key or os.environ.get(KEY_VARIABLE) or None
                generated = key is None
                if key is None:
                    key = secrets.token_urlsafe(32)
                http = HttpHost(
                    app_root,
                    keys=[key],
                    master_key=args.master_key or os.environ.get(MASTER_KEY_VARIABLE) or None,
                    port=port,
                    max_request_body_bytes=_body_limit(args.max_request_body_bytes),
                )
                if selected is not None:
                    http.http_functions = [f for f in http.http_functions if f.name in selected]
                if not http.http_functions:
                    http = None  # nothing to serve: bind no port
            if not args.no_eventhub:
                hubs = EventHubHost(
                    app_root,
                    functions=selected,
                    checkpoint_container=args.checkpoint_container,
                    load_balancing_interval=args.load_balancing_interval,
                    ownership_expiration=args.ownership_expiration,
                )
                if not hubs.functions and not hubs.skipped:
                    hubs = None
            if http is None and hubs is None:
                raise AppConfigError("nothing to run: no HTTP or Event Hub function selected")
            if http is not None:
                http.start()
            if hubs is not None:
                hubs.start()
        except (AppConfigError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except ConnectionError as exc:
            if http is not None:
                http.stop()
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"error: cannot listen on 127.0.0.1:{port}: {exc}", file=sys.stderr)
            return 1
        try:
            print(_banner(app_root, http, hubs, key=key if generated else None), flush=True)
            if hubs is not None and http is None and not hubs.running:
                print("error: no Event Hub function could be loaded", file=sys.stderr)
                return 1
            stop.wait()
        finally:
            if hubs is not None:
                hubs.stop()
            if http is not None:
                http.stop()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print("Host stopped.", flush=True)
    return 0


def _banner(
    app_root: Path, http: HttpHost | None, hubs: EventHubHost | None, *, key: str | None
) -> str:
    """What `func start` prints: one line per function, then how to authenticate."""
    lines = ["", "Functions:", ""]
    shown: set[str] = set()
    url = http.url if http else ""
    for function in sorted(http.http_functions if http else [], key=lambda f: f.name):
        state = "" if function.handler else f"  (failed to load: {function.load_error})"
        lines.append(
            f"\t{function.name}: [{_methods(function.methods)}] "
            f"{url}/{function.route.template}{state}"
        )
        shown.add(function.name)
    running = set(hubs.running) if hubs else set()
    for function in sorted(hubs.functions if hubs else [], key=lambda f: f.name):
        if function.name in running:
            retry = function.retry.strategy if function.retry else "none"
            lines.append(
                f"\t{function.name}: eventHubTrigger {function.eventhub_name} "
                f"(consumer group {function.consumer_group}, retry {retry})"
            )
            shown.add(function.name)
    skipped = {**(http.skipped if http else {}), **(hubs.skipped if hubs else {})}
    for function in discover_functions(app_root):
        if function.name not in shown and function.name not in skipped:
            skipped[function.name] = "not selected"
    for name, reason in sorted(skipped.items()):
        if name not in shown:
            lines.append(f"\t{name}: skipped ({reason})")
    lines.append("")
    if http is None:
        return "\n".join(lines)
    levels = {f.auth_level for f in http.http_functions}
    if key is not None:
        lines.append(
            f"Host key, generated for this run (send it as the {FUNCTION_KEY_HEADER} header "
            f"or ?code=): {key}"
        )
    elif levels & {"function", "admin"}:
        lines.append(f"Host key: the one you gave (--key or ${KEY_VARIABLE}).")
    if "admin" in levels and not http.has_master_key:
        lines.append("No master key: authLevel admin functions will answer 401.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
