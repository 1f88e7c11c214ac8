"""`python -m simulator`: run a fleet against the ingest endpoint, generate data, plot a device.

The CLI is the edge where configuration is read (arguments, `FLEETSCORE_FUNCTION_KEY`) and
checked once; everything below it takes values. The physics, offline generation and plotting
modules are imported only when their command runs, so a checkout without them still answers
`--help` and says clearly what is missing.
"""

from __future__ import annotations

import argparse
import importlib
import os
import random
import socket
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

__all__ = ["KEY_ENV", "build_parser", "main"]

KEY_ENV = "FLEETSCORE_FUNCTION_KEY"
EXIT_USAGE = 2

_EXAMPLES = """\
examples:
  python -m simulator run --url http://127.0.0.1:7071/api/readings --key KEY \\
      --devices 50 --speed 60 --duration 300 --truth out/truth.jsonl --manifest out/manifest.json
  python -m simulator run --url ... --rate 500 --bad-fraction 0.05   # paced, with bad input
  python -m simulator generate --devices 200 --days 30 --out data/
  python -m simulator plot --help
"""

_RUN_DESCRIPTION = f"""\
Step a simulated fleet in accelerated time and POST every reading to the ingest endpoint.

Simulated time runs at --speed times real time and ends at the wall clock when the run ends
(the fleet starts duration x (speed - 1) seconds in the past), so every timestamp is inside
the ingest's 7-day window. Progress goes to stderr on one updating line; a summary follows.
Exit code: 0 when every reading sent was confirmed (202, or an expected rejection of a
--bad-fraction reading), 1 when some were given up on or wrongly answered, 2 for a
configuration error (key, URL, speed and duration), 130 on Ctrl-C.
The function key comes from --key or the {KEY_ENV} environment variable.
"""


def _module(name: str) -> Any | None:
    """Import `simulator.<name>`, or None when that module is not part of this checkout."""
    try:
        return importlib.import_module(f"simulator.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"simulator.{name}":
            raise  # a missing dependency inside the module is a real error, not "absent"
        return None


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within 0..1, got {text}")
    return value


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    target = parser.add_argument_group("target")
    target.add_argument("--url", required=True, help="ingest URL, e.g. .../api/readings")
    target.add_argument("--key", help=f"function key (default: ${KEY_ENV})")
    fleet = parser.add_argument_group("fleet and time")
    fleet.add_argument("--devices", type=_positive(int), default=50, help="machines")
    fleet.add_argument("--seed", type=int, default=0, help="seed of physics and client")
    fleet.add_argument(
        "--speed", type=float, default=60.0, help="simulated seconds per real second"
    )
    fleet.add_argument("--duration", type=_positive(float), default=300.0, help="real seconds")
    fleet.add_argument(
        "--interval", type=_positive(float), default=10.0, help="simulated s between readings"
    )
    send = parser.add_argument_group("sending")
    send.add_argument(
        "--rate",
        type=_positive(float),
        help="cap on readings/s sent (default: no cap); the fleet itself produces "
        "devices x speed / interval readings/s",
    )
    send.add_argument("--batch-size", type=_positive(int), default=200, help="readings/request")
    send.add_argument("--connections", type=_positive(int), default=4, help="concurrent requests")
    send.add_argument("--timeout", type=_positive(float), default=10.0, help="seconds/request")
    send.add_argument("--max-retries", type=int, default=8, help="retries per request")
    send.add_argument(
        "--bad-fraction", type=_fraction, default=0.0, help="share of malformed readings (0..1)"
    )
    out = parser.add_argument_group("output")
    out.add_argument("--truth", help="write ground truth (anomalies, failures) as JSONL here")
    out.add_argument("--manifest", help="write accepted readings per device as JSON here")
    out.add_argument("--quiet", action="store_true", help="no progress line, summary only")


def _fail(message: str) -> int:
    print(f"simulator: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _unreachable(url: str, timeout: float) -> str | None:
    """Say why `url`'s host cannot be reached, or None: one TCP connect before a long run."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"--url must be an http(s) URL, got {url!r}"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"cannot reach {parts.hostname}:{port} ({exc.strerror or exc}); is the host up?"


def _run_command(args: argparse.Namespace) -> int:
    key = args.key or os.environ.get(KEY_ENV)
    if not key:
        return _fail(f"no function key: pass --key or set {KEY_ENV}")
    fleet_module = _module("fleet")
    if fleet_module is None:
        return _fail("'run' needs simulator/fleet.py (the fleet physics), which is missing")
    from .client import IngestClient
    from .run import plan_start, run

    try:
        start = plan_start(datetime.now(UTC), speed=args.speed, duration_s=args.duration)
    except ValueError as exc:
        return _fail(str(exc))
    problem = _unreachable(args.url, min(args.timeout, 5.0))
    if problem:
        return _fail(problem)
    pace = args.devices * args.speed / args.interval
    if args.rate is not None and args.rate < pace:
        print(
            f"simulator: note: --rate {args.rate:g} is below the fleet's {pace:,.0f} readings/s: "
            "the run will outlast --duration and its timestamps will lag the wall clock",
            file=sys.stderr,
        )
    config = fleet_module.FleetConfig(
        devices=args.devices, seed=args.seed, interval_s=args.interval
    )
    fleet = fleet_module.Fleet(config, start=start)
    truth = None
    if args.truth:
        truth_module = _module("truth")
        if truth_module is None:
            return _fail("--truth needs simulator/truth.py, which is missing")
        truth = truth_module.TruthWriter(args.truth)
    client = IngestClient(
        args.url,
        key,
        batch_size=args.batch_size,
        max_connections=args.connections,
        timeout=args.timeout,
        max_retries=args.max_retries,
        rate=args.rate,
        bad_fraction=args.bad_fraction,
        rng=random.Random(args.seed),
    )
    try:
        code = run(
            fleet,
            client,
            speed=args.speed,
            duration_s=args.duration,
            interval_s=args.interval,
            truth=truth,
            progress=sys.stderr,
            progress_every_s=3600.0 if args.quiet else 0.5,
        )
    finally:
        client.close()
        if truth is not None:
            truth.close()
    if args.manifest:
        client.write_manifest(args.manifest)
    return code


def _add_delegated(
    commands: argparse._SubParsersAction, name: str, help_text: str
) -> argparse.ArgumentParser:
    """Add `generate` or `plot`, wired to `simulator.<name>` when that module is present."""
    module = _module(name)
    parser = commands.add_parser(
        name, help=help_text, description=help_text, formatter_class=_Formatter
    )
    if module is None:
        parser.description = f"{help_text} (unavailable: simulator/{name}.py is missing)"
        # Its arguments are unknown without the module: accept any, then say what is missing.
        parser.set_defaults(
            handler=lambda _args: _fail(f"simulator/{name}.py is missing"), any_arguments=True
        )
        return parser
    getattr(module, f"add_{name}_arguments")(parser)
    parser.set_defaults(handler=getattr(module, f"run_{name}"))
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The whole CLI: `run`, `generate` and `plot` subcommands."""
    parser = argparse.ArgumentParser(
        prog="python -m simulator",
        description="fleetscore's device fleet simulator: machines that degrade, fail and "
        "misbehave, sending readings to the ingest function or writing them to files.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run_parser = commands.add_parser(
        "run",
        help="send a live fleet's readings to the ingest endpoint",
        description=_RUN_DESCRIPTION,
        epilog=_EXAMPLES,
        formatter_class=_Formatter,
    )
    _add_run_arguments(run_parser)
    run_parser.set_defaults(handler=_run_command)
    _add_delegated(commands, "generate", "write a fleet's readings and labels to files offline")
    _add_delegated(commands, "plot", "plot one device's metrics with its ground truth (PNG)")
    return parser


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keep the hand-wrapped description; show each real default (not None, not flags)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` and run the chosen command; return its exit code."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "any_arguments", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
