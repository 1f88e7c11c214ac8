"""`python -m local.host`: serve the app's HTTP functions on 127.0.0.1, like `func start`.

Order matters and follows Core Tools: the settings file's `Values` go into the environment
first (a variable already set wins), then the function modules are imported, so a module that
reads a setting at import sees it.
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

from . import AppConfigError, apply_settings, load_local_settings
from .http import DEFAULT_MAX_REQUEST_BODY_BYTES, FUNCTION_KEY_HEADER, HttpHost

__all__ = ["main"]

log = logging.getLogger("local.host")

DEFAULT_PORT = 7071
KEY_VARIABLE = "FUNCTIONS_KEY"
MASTER_KEY_VARIABLE = "FUNCTIONS_MASTER_KEY"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m local.host",
        description=(
            "Serve the function app's HTTP-triggered functions on 127.0.0.1 the way the Azure "
            "Functions host does: routes from function.json under host.json's routePrefix, "
            "methods, authLevel keys (x-functions-key header or ?code=), a request body limit, "
            "500 for a function that raises. Functions with other triggers are listed and "
            "skipped. Stop with Ctrl-C or SIGTERM."
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
        default=DEFAULT_MAX_REQUEST_BODY_BYTES,
        help="bodies over this are answered 413 (default: %(default)s, the documented limit)",
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run until Ctrl-C or SIGTERM; return the process exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="[%(asctime)s] %(levelname)s %(name)s: %(message)s"
    )
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
    try:
        try:
            if settings_path is not None:
                settings = load_local_settings(settings_path)
                for name in apply_settings(settings.values):
                    print(f"Skipping '{name}' from local settings: already set in the environment.")
                if port is None:
                    port = settings.local_http_port
            port = DEFAULT_PORT if port is None else port
            key = args.key or os.environ.get(KEY_VARIABLE) or None
            generated = key is None
            if key is None:
                key = secrets.token_urlsafe(32)
            host = HttpHost(
                app_root,
                keys=[key],
                master_key=args.master_key or os.environ.get(MASTER_KEY_VARIABLE) or None,
                port=port,
                max_request_body_bytes=args.max_request_body_bytes,
            )
            host.start()
        except (AppConfigError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            print(f"error: cannot listen on 127.0.0.1:{port}: {exc}", file=sys.stderr)
            return 1
        try:
            print(_banner(host, key=key if generated else None), flush=True)
            stop.wait()
        finally:
            host.stop()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print("Host stopped.", flush=True)
    return 0


def _banner(host: HttpHost, *, key: str | None) -> str:
    """What `func start` prints: one line per function, then how to authenticate."""
    lines = ["", "Functions:", ""]
    for function in sorted(host.http_functions, key=lambda f: f.name):
        state = "" if function.handler else f"  (failed to load: {function.load_error})"
        lines.append(
            f"\t{function.name}: [{_methods(function.methods)}] "
            f"{host.url}/{function.route.template}{state}"
        )
    for name, reason in sorted(host.skipped.items()):
        lines.append(f"\t{name}: skipped ({reason})")
    lines.append("")
    if host.skipped:
        lines.append("This host serves httpTrigger functions only; the others are listed, not run.")
    levels = {f.auth_level for f in host.http_functions}
    if key is not None:
        lines.append(
            f"Host key, generated for this run (send it as the {FUNCTION_KEY_HEADER} header "
            f"or ?code=): {key}"
        )
    elif levels & {"function", "admin"}:
        lines.append(f"Host key: the one you gave (--key or ${KEY_VARIABLE}).")
    if "admin" in levels and not host.has_master_key:
        lines.append("No master key: authLevel admin functions will answer 401.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
