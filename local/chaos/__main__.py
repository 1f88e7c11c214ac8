"""`python -m local.chaos` (`make chaos`): prove that faults lose nothing and let nobody in.

Starts its own stack on free ports (a running `make demo` is left alone), sends a steady fleet,
injects every fault in turn, settles the books per fault, probes the stack's security, scans
its logs for secrets, then fuzzes the HTTP API. Prints a table per fault and, last, one line:
`CHAOS {"accepted": …, "stored": …, "missing": …, "duplicated": …, "dead_lettered": …,
"fuzz_cases": …, "server_errors": …}`. Exit status 0 when every check held, 1 otherwise,
2 when the stack could not start.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import TextIO

from local.demo.processes import ServiceError, free_ports
from local.demo.stack import ROOT, DemoConfig, Ports

from .account import chaos_line
from .fuzz import CHAOS_EXAMPLES, CHAOS_HTTP_EXAMPLES, FuzzResult, run_fuzz
from .profile import FULL, QUICK
from .report import ChaosReport, report_json
from .run import ChaosRun
from .security import Leak, Probe, probe_all, scan_logs, stack_secrets

EXIT_OK, EXIT_FAILED, EXIT_NOT_STARTED = 0, 1, 2
FUZZ_TIMEOUT_S = 420.0  # ~2.5 min measured; past this the fuzz stage fails rather than drags


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m local.chaos",
        description=(
            "Run the local stack under faults (score hosts killed mid-batch, AML 503/429 and "
            "outage, Azurite and Event Hubs restarts, poison events), probe its security, scan "
            "its logs for secrets and fuzz its HTTP API; then check that every reading the "
            "ingest accepted was stored exactly once. Takes about 12 minutes (--quick: 2)."
        ),
        epilog="The last line is CHAOS {json}. Logs of every process: <workdir>/logs/.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="the short run of `make test` (no fuzzing)"
    )
    parser.add_argument(
        "--outage", type=float, metavar="S", help="seconds AML stays down (default 120; 12 quick)"
    )
    parser.add_argument("--devices", type=int, metavar="N", help="simulated devices (default 10)")
    parser.add_argument(
        "--fuzz-examples",
        type=int,
        default=CHAOS_EXAMPLES,
        metavar="N",
        help="examples per in-process fuzz test (default: %(default)s)",
    )
    parser.add_argument(
        "--fuzz-http-examples",
        type=int,
        default=CHAOS_HTTP_EXAMPLES,
        metavar="N",
        help="examples per fuzz test over HTTP (default: %(default)s)",
    )
    parser.add_argument("--no-fuzz", action="store_true", help="skip the fuzzing")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=ROOT / ".local" / "chaos",
        help="state and logs of the run (default: %(default)s)",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the report here")
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    """Run, print, and return the exit status."""
    args = _parser().parse_args(argv)
    profile = QUICK if args.quick else FULL
    if args.outage is not None:
        profile = replace(profile, outage_s=args.outage)
    if args.devices is not None:
        profile = replace(profile, devices=args.devices)
    *ports, proxy_port = free_ports(len(fields(Ports)) + 1)  # one pick: no port twice
    config = DemoConfig(ports=Ports(*ports), workdir=args.workdir)
    config.logs.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        filename=config.logs / "chaos.log",
        filemode="w",
        level=logging.INFO,
        format="[%(asctime)s] %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("azure").setLevel(logging.WARNING)

    run = ChaosRun(config, profile, out=out, proxy_port=proxy_port)
    probes: list[Probe] = []
    try:
        try:
            stack = run.start()
        except (ServiceError, FileNotFoundError) as exc:
            out.write(f"error: the stack did not start: {exc}\n")
            return EXIT_NOT_STARTED
        try:
            report = run.run()
        except Exception as exc:  # a process died, a deadline passed: say so, still end in CHAOS
            logging.getLogger(__name__).exception("the chaos run failed")
            out.write(f"error: the run failed: {type(exc).__name__}: {exc}\n")
            out.write(f"(logs in {config.logs})\n")
            out.write("CHAOS " + json.dumps({"ok": False, "error": str(exc)[:300]}) + "\n")
            return EXIT_FAILED
        out.write("==> security probes against the stack that went through it all\n")
        probes = probe_all(stack)
    finally:
        run.close()
    leaks = scan_logs(sorted(config.logs.glob("*.log")), stack_secrets(stack))
    fuzz = None
    if not args.no_fuzz and not args.quick:
        out.write(
            f"==> fuzzing the HTTP API ({args.fuzz_examples} examples per in-process test, "
            f"{args.fuzz_http_examples} per HTTP test; log {config.logs / 'fuzz.log'})\n"
        )
        out.flush()
        fuzz = run_fuzz(
            examples=args.fuzz_examples,
            http_examples=args.fuzz_http_examples,
            root=ROOT,
            log_path=config.logs / "fuzz.log",
            timeout=FUZZ_TIMEOUT_S,
        )
    ok = _print(out, report, probes, leaks, fuzz)
    if args.json is not None:
        args.json.write_text(report_json(report) + "\n")
    cases = fuzz.cases if fuzz else 0
    errors = fuzz.server_errors if fuzz else 0
    line = chaos_line(
        report.account, fuzz_cases=cases, server_errors=errors, redelivered=report.rescored
    )
    out.write(line + "\n")
    out.flush()
    return EXIT_OK if ok else EXIT_FAILED


def _print(
    out: TextIO,
    report: ChaosReport,
    probes: list[Probe],
    leaks: list[Leak],
    fuzz: FuzzResult | None,
) -> bool:
    """The human-readable account; returns the verdict."""
    w = out.write
    w("\nper fault (readings booked to the fault during which their 202 arrived):\n")
    w(f"  {'fault':<42}{'accepted':>9}{'stored':>9}{'missing':>9}{'dup':>6}{'dead-l.':>9}\n")
    for a in report.account.phases:
        w(
            f"  {a.name:<42}{a.accepted:>9,}{a.stored:>9,}{a.missing:>9,}"
            f"{a.duplicated:>6,}{a.dead_lettered:>9,}\n"
        )
        if a.notes:
            w(f"  {'':<4}{json.dumps(a.notes, default=str)}\n")
    acc = report.account
    w(
        f"  {'total':<42}{acc.accepted:>9,}{acc.stored:>9,}{acc.missing:>9,}"
        f"{acc.duplicated:>6,}{acc.dead_lettered:>9,}\n"
    )
    if acc.unexpected:
        w(f"  rows for readings nobody accepted: {acc.unexpected}\n")
    if acc.missing_sample:
        w(f"  missing, first few: {acc.missing_sample}\n")
    w("\npoison (each must be dead-lettered with its reason; its neighbours stored):\n")
    for kind, reason in report.poison.get("reasons", {}).items():
        w(f"  {kind:<28} {reason or 'NOT DEAD-LETTERED'}\n")
    w(
        f"  neighbours stored: {report.poison.get('neighbours_stored')} of "
        f"{report.poison.get('neighbours')}\n"
    )
    w(f"  dead letters by reason: {dict(acc.dead_letter_reasons)}\n")
    w("\nsecurity:\n")
    for probe in probes:
        w(f"  {'ok  ' if probe.ok else 'FAIL'} {probe.name}: {probe.detail[:300]}\n")
    w(f"  {'ok  ' if not leaks else 'FAIL'} secrets in the logs: {len(leaks)} found\n")
    for leak in leaks[:10]:
        w(f"       {leak.path.name}:{leak.line_number} holds the {leak.what}\n")
    fuzz_ok = True
    if fuzz is not None:
        fuzz_ok = not fuzz.failed and fuzz.server_errors == 0
        w(
            f"\nfuzzing: {fuzz.cases:,} cases in {fuzz.seconds:.0f} s, "
            f"{fuzz.server_errors} server errors, pytest {'failed' if fuzz.failed else 'passed'}\n"
        )
    w(f"\nredeliveries absorbed: {report.rescored:,} readings were scored more than once\n")
    problems = report.problems()
    for problem in problems:
        w(f"  PROBLEM {problem}\n")
    ok = not problems and all(p.ok for p in probes) and not leaks and fuzz_ok
    w(f"\nverdict: {'ok' if ok else 'NOT OK'} ({report.seconds:.0f} s of faults and drain)\n")
    return ok


if __name__ == "__main__":
    sys.exit(main())
