"""The `plan` subcommand of `python -m fleetscore`: arguments, input files and the printed plan.

The arithmetic is in `fleetscore/plan.py`; this module reads the benchmark results and the AML
deployment file, and prints the plan as text (every number with its sum) or as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

from shared.settings import SETTINGS

from .plan import (
    LIMITS,
    AmlDeployment,
    Fleet,
    Plan,
    figures_from,
    load_figures,
    make_plan,
    number,
)

__all__ = [
    "DEFAULT_DEPLOYMENT",
    "DEFAULT_RESULTS",
    "add_plan_parser",
    "parse_interval",
    "plan_json",
    "read_deployment",
    "render_plan",
    "run_plan",
]

DEFAULT_RESULTS = Path("bench/results.json")
DEFAULT_DEPLOYMENT = Path("model/deploy/deployment.yml")

_INTERVAL = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*")
_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_interval(text: str) -> float:
    """`10s`, `1m`, `500ms`, `2h` or plain seconds -> seconds."""
    match = _INTERVAL.fullmatch(text)
    seconds = float(match[1]) * _SECONDS[match[2] or "s"] if match else 0.0
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"not an interval like 10s, 1m or 500ms: {text!r}")
    return seconds


def _positive(kind: type[int] | type[float]) -> Any:
    def convert(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
        return value

    return convert


def read_deployment(path: Path) -> AmlDeployment:
    """max_concurrent_requests_per_instance and WORKER_COUNT from an AML deployment YAML.

    Two keys are all it needs, so it matches them rather than parsing YAML; a missing
    WORKER_COUNT is azmlinfsrv's default, 1.

    Raises:
        OSError: the file cannot be read.
        ValueError: it has no max_concurrent_requests_per_instance.
    """
    text = path.read_text()
    mcr = re.search(r"^\s*max_concurrent_requests_per_instance:\s*(\d+)", text, re.M)
    workers = re.search(r"^\s*WORKER_COUNT:\s*[\"']?(\d+)", text, re.M)
    if mcr is None:
        raise ValueError(f"{path} sets no max_concurrent_requests_per_instance")
    return AmlDeployment(int(mcr[1]), int(workers[1]) if workers else 1, str(path))


def add_plan_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `plan` to the CLI."""
    parser = commands.add_parser(
        "plan",
        help="size Event Hubs, Functions, AML and Table Storage for a fleet",
        description=(
            "Turn a fleet size, measured per-hop figures and Azure's documented limits into a "
            "deployment plan: Event Hubs partitions and throughput units, ingest instances, "
            "score hosts, AML instances and storage accounts, each sized to run at --headroom "
            "of its capacity, and the limit that binds first. Every number is printed with "
            "its arithmetic. Measured figures come from --results (default "
            f"{DEFAULT_RESULTS} when it exists); a figure it lacks is a built-in conservative "
            'default, marked "not measured here: default". AML workers and concurrency come '
            f"from --deployment (default {DEFAULT_DEPLOYMENT} when it exists)."
        ),
        epilog=(
            "examples:\n"
            "  python -m fleetscore plan --devices 100000 --interval 10s\n"
            "  python -m fleetscore plan --devices 20000 --interval 1m --readings-per-request 6\n"
            "  python -m fleetscore plan --devices 5000 --interval 500ms --json | jq .plan"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--devices", type=_positive(int), required=True, help="fleet size")
    parser.add_argument(
        "--interval",
        type=parse_interval,
        required=True,
        metavar="TIME",
        help="time between one device's readings: 10s, 1m, 500ms",
    )
    parser.add_argument(
        "--readings-per-request",
        type=_positive(int),
        default=1,
        metavar="N",
        help="readings of one device in one request, hence in one event (default: %(default)s, "
        "as the simulator sends: its 200-reading requests hold one reading each from 200 "
        "devices)",
    )
    parser.add_argument(
        "--metrics", type=_positive(int), default=6, help="metrics per reading (default: 6)"
    )
    parser.add_argument(
        "--headroom",
        type=_positive(float),
        default=0.7,
        help="target utilisation of every unit (default: %(default)s)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        metavar="FILE",
        help=f"measured figures (default: {DEFAULT_RESULTS})",
    )
    parser.add_argument(
        "--deployment",
        type=Path,
        metavar="FILE",
        help=f"AML deployment YAML (default: {DEFAULT_DEPLOYMENT})",
    )
    parser.add_argument("--json", action="store_true", help="one JSON document")


def plan_json(plan: Plan, results: Path | None) -> dict[str, Any]:
    """The plan as one JSON-ready document."""
    first = plan.binds_first
    return {
        "inputs": {
            "devices": plan.fleet.devices,
            "interval_s": plan.fleet.interval_s,
            "readings_per_request": plan.fleet.readings_per_request,
            "metrics": plan.fleet.metrics,
            "headroom": plan.fleet.headroom,
            "anomaly_rate": plan.fleet.anomaly_rate,
        },
        "results_file": str(results) if results else None,
        "figures": {
            f.name: {"value": f.value, "unit": f.unit, "source": f.source, "measured": f.measured}
            for f in plan.figures.values()
        },
        "limits": {k: {"value": v.value, "what": v.what, "doc": v.doc} for k, v in LIMITS.items()},
        "aml_deployment": {
            "max_concurrent_requests_per_instance": plan.aml.max_concurrent_requests_per_instance,
            "worker_count": plan.aml.worker_count,
            "source": plan.aml.source,
        },
        "load": plan.load,
        "derivation": list(plan.derivation),
        "hops": [
            {
                "name": h.name,
                "demand": h.demand,
                "demand_unit": h.demand_unit,
                "capacity_per_unit": h.capacity,
                "unit": h.unit,
                "need": h.need,
                "units": h.units,
                "limit": h.limit,
                "doc": h.doc or None,
                "cap": h.cap,
                "room": h.room,
                "arithmetic": list(h.arithmetic),
            }
            for h in plan.hops
        ],
        "plan": plan.deployment,
        "plan_lines": list(plan.deployment_lines),
        "binds_first": {
            "hop": first.name,
            "limit": first.limit,
            "doc": first.doc,
            "room": first.room,
            "devices_at_limit": math.floor(plan.fleet.devices * (first.room or 0.0)),
            "arithmetic": plan.room_line(first),
        },
        "notes": list(plan.notes),
    }


def render_plan(plan: Plan, results: Path | None) -> str:
    """The plan as text: load, figures, hops with their sums, the plan, limits, notes."""
    fleet, h = plan.fleet, plan.fleet.headroom
    out = [
        f"Capacity plan: {number(fleet.devices)} devices, a reading every "
        f"{number(fleet.interval_s)} s, {fleet.readings_per_request} reading(s) per device per "
        f"request, {fleet.metrics} metrics; every unit sized to run at {h:.0%} of capacity",
        "",
        "Load",
        *(f"  {line}" for line in plan.derivation),
        "",
        f"Figures ({f'from {results}' if results else 'no results file: all defaults'})",
    ]
    for fig in plan.figures.values():
        out.append(f"  {fig.name:<36} {number(fig.value):>7} {fig.unit}")
        out.append(f"  {'':<36} {'':>7} [{fig.source}]")
    out += ["", "Hops", f"  {'HOP':<34} {'DEMAND':<22} {'PER UNIT':>10}  {'UNITS':<14} ROOM"]
    for hop in plan.hops:
        demand = f"{number(hop.demand)} {hop.demand_unit}"
        room = f"{hop.room:.2f}x" if hop.room is not None else "-"
        units = f"{hop.units} {hop.unit}{'' if hop.units == 1 else 's'}"
        out.append(f"  {hop.name:<34} {demand:<22} {number(hop.capacity):>10}  {units:<14} {room}")
        out += [f"      {line}" for line in hop.arithmetic]
        out.append(f"      limit: {hop.limit}" + (f" [{hop.doc}]" if hop.doc else ""))
    first = plan.binds_first
    capped = sorted((x for x in plan.hops if x.room is not None), key=lambda x: x.room or 0.0)
    out += [
        "",
        "Plan",
        *(f"  {line}" for line in plan.deployment_lines),
        f"  Binds first: {first.name} ({first.limit}): {plan.room_line(first)}"
        + (" - already past it at this fleet" if (first.room or 0) < 1 else ""),
        *(f"    then {x.name}: {plan.room_line(x)}" for x in capped[1:]),
        "",
        "Azure limits used",
        *(f"  {number(v.value):>9} {v.what} [{v.doc}]" for v in LIMITS.values()),
        "",
        "Notes",
        *(f"  - {note}" for note in plan.notes),
    ]
    return "\n".join(out)


def run_plan(args: argparse.Namespace) -> int:
    """Run `plan`; 0 on success, 2 on bad usage or an unreadable input file."""
    results: Path | None = args.results
    if results is None and DEFAULT_RESULTS.exists():
        results = DEFAULT_RESULTS
    deployment: Path | None = args.deployment
    if deployment is None and DEFAULT_DEPLOYMENT.exists():
        deployment = DEFAULT_DEPLOYMENT
    try:
        fleet = Fleet(
            args.devices,
            args.interval,
            readings_per_request=args.readings_per_request,
            metrics=args.metrics,
            headroom=args.headroom,
        )
        measured = load_figures(results) if results else {}
        aml = read_deployment(deployment) if deployment else AmlDeployment()
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    concurrency = int(next(s.default for s in SETTINGS if s.name == "SCORE_MAX_CONCURRENCY") or 4)
    plan = make_plan(
        fleet, figures_from(measured, str(results)), aml, score_max_concurrency=concurrency
    )
    if args.json:
        print(json.dumps(plan_json(plan, results), indent=2))
    else:
        print(render_plan(plan, results))
    return 0
