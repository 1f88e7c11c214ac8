"""`python -m local.demo`: the whole pipeline on this machine (what `make demo` runs).

Starts Azurite, the Event Hubs emulator, azmlinfsrv with model/score.py, the dashboard, one
HTTP host and N score hosts; sends a simulated fleet through the ingest function; with
`--duration` stops sending after that long, waits until every accepted reading is stored and
prints a summary whose last line is `SUMMARY {...}`. Ctrl-C or SIGTERM stops everything it
started. Exit status: 0 when accepted == stored and no duplicates, 1 otherwise, 2 when the
stack did not start, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import logging
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from types import FrameType

from .processes import ServiceError, free_ports
from .stack import ROOT, DemoConfig, Ports, Stack
from .summary import PredictionsTable, count_scored, summarize, wait_drained
from .traffic import FleetRun, longest_duration

__all__ = ["main"]

log = logging.getLogger("local.demo")

ARTIFACT = ROOT / "model" / "artifacts" / "failure.json"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m local.demo",
        description=(
            "Run the whole fleetscore pipeline on this machine: Azurite (blob + table), the "
            "Event Hubs emulator, azmlinfsrv serving model/score.py, the dashboard (Power BI "
            "stand-in), one HTTP Functions host (ingest + query) and N score hosts sharing the "
            "hub's partitions; then send a simulated fleet through the ingest function. Logs: "
            ".local/logs/<name>.log; the hosts' settings: .local/demo/local.settings.json."
        ),
        epilog=(
            "With --duration the run ends with a summary (sent, accepted, scored, stored, "
            "duplicates, anomalies, latency p50/p99) and a last line 'SUMMARY {json}'; the exit "
            "status is 1 unless every accepted reading was stored exactly once. Without it the "
            "fleet runs until Ctrl-C (or as long as the ingest's 7-day window allows at --speed)."
        ),
    )
    run = parser.add_argument_group("run")
    run.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="SECONDS",
        help="send for this long, then drain and print the summary",
    )
    run.add_argument(
        "--devices", type=int, default=20, help="simulated machines (default: %(default)s)"
    )
    run.add_argument(
        "--speed",
        type=float,
        default=720.0,
        help="simulated seconds per real second (default: %(default)s: a day in "
        "two minutes, so the detector is past its 12-hour warm-up)",
    )
    run.add_argument(
        "--interval",
        type=float,
        default=30.0,
        help="simulated seconds between a device's readings (default: %(default)s)",
    )
    run.add_argument(
        "--score-hosts", type=int, default=2, help="score host processes (default: %(default)s)"
    )
    run.add_argument("--seed", type=int, default=0, help="simulator seed (default: %(default)s)")
    run.add_argument(
        "--workdir",
        type=Path,
        default=ROOT / ".local",
        help="logs/ and demo/ (this run's state, wiped at start) go here (default: .local)",
    )
    run.add_argument(
        "--drain-timeout",
        type=float,
        default=180.0,
        metavar="SECONDS",
        help="how long to wait for every accepted reading to be stored (default: %(default)s)",
    )
    ports = parser.add_argument_group("ports on 127.0.0.1 (0 = any free port)")
    for f in fields(Ports):
        flag = "--" + f.name.replace("_", "-") + "-port"
        ports.add_argument(
            flag,
            dest=f"port_{f.name}",
            type=int,
            default=f.default,
            metavar="PORT",
            help="(default: %(default)s)",
        )
    return parser


def ensure_model_artifact(logs: Path) -> None:
    """Train the failure predictor (as `make model` does) when its artifact is missing."""
    if ARTIFACT.exists():
        return
    py = sys.executable
    steps = []
    if not (ROOT / "data" / "train" / "manifest.json").exists():
        steps.append(
            [
                py,
                "-m",
                "simulator",
                "generate",
                "--devices",
                "60",
                "--days",
                "20",
                "--seed",
                "101",
                "--out",
                "data/train",
            ]
        )
    steps.append(
        [py, "-m", "model.train", "--data", "data/train", "--out", "model/artifacts", "--seed", "0"]
    )
    logs.mkdir(parents=True, exist_ok=True)
    print(f"==> {ARTIFACT.relative_to(ROOT)} is missing: training it (log: {logs}/model-train.log)")
    with (logs / "model-train.log").open("wb") as out:
        for argv in steps:
            subprocess.run(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, check=True)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM takes the same way out as Ctrl-C


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if (
        args.devices < 1
        or args.score_hosts < 1
        or (args.duration is not None and args.duration <= 0)
    ):
        parser.error("--devices and --score-hosts must be at least 1, --duration above 0")
    logging.basicConfig(level=logging.INFO, format="demo: %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)
    spare = iter(free_ports(len(fields(Ports))))
    ports = Ports(**{f.name: getattr(args, f"port_{f.name}") or next(spare) for f in fields(Ports)})
    config = DemoConfig(ports=ports, score_hosts=args.score_hosts, workdir=args.workdir)
    previous = signal.signal(signal.SIGTERM, _terminate)
    # Ctrl-C must stop the stack even when started from a shell that ignores SIGINT (a
    # background job), which Python would otherwise inherit.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    stack = Stack(config)
    code = 0
    summary = None
    stopped: list[str] = []
    try:
        ensure_model_artifact(config.logs)
        print(f"==> starting the local stack (logs in {config.logs}/)", flush=True)
        stack.start()
        _describe(stack, args)
        duration = args.duration or longest_duration(args.speed)
        fleet = FleetRun(
            stack.ingest_url,
            stack.function_key,
            devices=args.devices,
            speed=args.speed,
            interval_s=args.interval,
            duration_s=duration,
            seed=args.seed,
            truth=config.state / "truth.jsonl",
            manifest=config.state / "manifest.json",
        )
        print(
            f"==> sending: {args.devices} devices at {args.speed:g}x for {duration:.0f} s",
            flush=True,
        )
        # While the fleet sends, Ctrl-C and SIGTERM only ask it to stop between steps: raised
        # anywhere, KeyboardInterrupt can land while the ingest client holds its lock, and the
        # flush after it then waits on that lock for ever.
        stop = threading.Event()
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            sent = fleet.send(progress=sys.stderr, stop=stop)
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, _terminate)
        if sent.exit_code == 130 or stop.is_set():
            raise KeyboardInterrupt
        if sent.fatal:
            print(f"simulator stopped: {sent.fatal}", file=sys.stderr)
        print(
            f"==> waiting (up to {args.drain_timeout:.0f} s) until every accepted reading "
            "is stored",
            flush=True,
        )
        table = PredictionsTable(stack.storage_connection)
        try:
            drained, rows = wait_drained(
                table,
                set(sent.accepted_at),
                timeout=args.drain_timeout,
                check=stack.processes.check_alive,
            )
        finally:
            table.close()
        if not drained:
            print("the pipeline did not drain in time; the summary shows what was stored")
        # Stopped cleanly, the score hosts' Power BI sinks push their last window on the way out.
        stopped += stack.stop_score_hosts()
        summary = summarize(
            sent=sent.sent,
            accepted_at=sent.accepted_at,
            rows=rows,
            scored=count_scored(stack.dashboard_db),
        )
        code = 0 if summary.ok and sent.exit_code == 0 else 1
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the stack", flush=True)
        code = 130
    except (ServiceError, FileNotFoundError, subprocess.CalledProcessError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        code = 2
    finally:
        # A second Ctrl-C or SIGTERM must not interrupt the stopping and strand children.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stopped += stack.stop()
        if stopped:
            print(f"stopped {len(stopped)} processes it started: {', '.join(stopped)}", flush=True)
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous)
    if summary is not None:
        print("==> summary")
        print(summary.text())
        print(summary.line(), flush=True)
    return code


def _describe(stack: Stack, args: argparse.Namespace) -> None:
    p = stack.config.ports
    print("==> up:")
    print(f"  dashboard      {stack.dashboard_url}")
    print(f"  ingest         {stack.ingest_url}")
    print(f"  query          {stack.api_url}/devices/<id>/predictions, {stack.api_url}/anomalies")
    print(f"  score hosts    {args.score_hosts}, sharing the 4 partitions of hub 'readings'")
    print(f"  azmlinfsrv     http://127.0.0.1:{p.aml}/score   event hubs 127.0.0.1:{p.eventhubs}")
    print(
        f"  azurite        blob {p.azurite_blob}, queue {p.azurite_queue}, table {p.azurite_table}"
    )
    print(f"  settings       {stack.settings_path} (holds this run's keys)")
    print("  query e.g.     .venv/bin/python -m fleetscore query devices pump-0000 --limit 5")
    print("                 (reads the URL and function key from that settings file)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
