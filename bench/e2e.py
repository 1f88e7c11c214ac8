"""End to end: the whole local stack at rising offered load, until the backlog grows.

    .venv/bin/python bench/e2e.py [--quick] [--json FILE]

Starts the demo's stack (Azurite, the Event Hubs emulator, azmlinfsrv with the real model, the
dashboard, one HTTP host, two score hosts) on free ports and drives it with the simulated fleet
through the ingest function, one stage per offered rate. A stage is *sustained* when the sender
got ≥ 97 % of the offered readings acknowledged, the backlog (accepted, not yet stored) grew by
less than 10 % of the offered rate over the stage's second half, and what was left drained
within 20 s of the stage's end (a retried invocation alone waits 5 s). For each stage:
offered and stored readings/s, p50/p99 latency from the 202 to the prediction row's Timestamp,
and the CPU each process used per wall second, which names the bottleneck (the process closest
to a full core; Node's Azurite and each Python process are single-core bound).

Everything shares this machine's cores, so the score host's own efficiency is reported too:
readings stored per CPU-second of the score hosts.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))  # for _common

from _common import bench_parser, emit_json

from local.demo.processes import free_ports
from local.demo.stack import DemoConfig, Ports, Stack
from local.demo.summary import PredictionsTable
from local.demo.traffic import AcceptLog
from simulator.client import IngestClient
from simulator.fleet import Fleet, FleetConfig

DEVICES = 100
INTERVAL_S = 10.0  # simulated seconds between a device's readings
# A request carries ~10 readings of each of the 100 devices (a gateway forwarding what its
# machines buffered), so an event holds ~10 readings of one device. With 2 per device per event
# (requests of 200) the same stack sustains ~1,000 readings/s: the Table transactions, one per
# device and batch, are then nearly empty, and Azurite's cost is per transaction.
READINGS_PER_REQUEST = 1000
LOGS_ROOT = Path(__file__).resolve().parents[1] / ".local" / "bench-e2e"  # kept for a look after
SUSTAINED_SHARE = 0.97  # of the offered rate the sender must get acknowledged
# The trigger gathers events for up to 2 s (host.json), so the backlog is a sawtooth: its slope
# over a few seconds is noisy, and a stage that keeps up still ends with a few seconds of work.
# A stage is sustained when the slope stays under 10 % of the offered rate and the rest drains
# within 20 s; an overload of r × capacity leaves about (r - 1) × stage seconds more to drain.
BACKLOG_GROWTH_SHARE = 0.10
LAG_LIMIT_S = 20.0  # one failed invocation waits 5 s (function.json) before its retry
DRAIN_LIMIT_S = 60.0
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Stage:
    """One offered rate and what came of it."""

    offered: float
    seconds: float
    accepted: int = 0
    drained: bool = False
    backlog_growth_per_s: float = 0.0  # readings/s the backlog grew in the stage's second half
    lag_s: float | None = None  # stage end -> its last reading stored
    p50_s: float | None = None
    p99_s: float | None = None
    cpu: dict[str, float] | None = None  # CPU seconds per wall second, per process
    ingest_p50_ms: float | None = None  # the sender's request latency (whole run so far)

    @property
    def accepted_per_s(self) -> float:
        """Readings acknowledged per second of the stage."""
        return self.accepted / self.seconds

    @property
    def sustained(self) -> bool:
        """The sender kept up, the backlog held (about) level, and it drained soon after."""
        return (
            self.drained
            and self.accepted_per_s >= SUSTAINED_SHARE * self.offered
            and self.backlog_growth_per_s <= BACKLOG_GROWTH_SHARE * self.offered
            and self.lag_s is not None
            and self.lag_s <= LAG_LIMIT_S
        )


def group_cpu_seconds(leader: int) -> float:
    """CPU seconds (user + system) of every live process in `leader`'s process group."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields_ = stat[stat.rindex(")") + 2 :].split()
        if int(fields_[2]) == leader:  # pgrp
            total += int(fields_[11]) + int(fields_[12])  # utime, stime
    return total / _TICKS


class Sender:
    """The fleet through the ingest function at a rate that can change between stages."""

    def __init__(self, url: str, key: str) -> None:
        """A fleet whose clock starts six days back, so its readings stay inside the window."""
        start = datetime.now(UTC) - timedelta(days=6)
        self.fleet = Fleet(FleetConfig(devices=DEVICES, interval_s=INTERVAL_S, seed=7), start=start)
        self.accepts = AcceptLog()
        self.client = IngestClient(
            url,
            key,
            batch_size=READINGS_PER_REQUEST,
            max_connections=6,
            session_factory=self.accepts.session_factory,
        )
        self.sending_s = 0.0

    def send(self, rate: float, seconds: float) -> None:
        """Step the fleet so that `rate` readings/s go out for `seconds`, then flush.

        `self.sending_s` is how long the stepping took: the span the offered rate is over
        (the flush after it only waits for the last answers).
        """
        period = DEVICES / rate
        started = time.monotonic()
        steps = math.ceil(seconds / period)
        for step in range(steps):
            due = started + step * period
            while (wait := due - time.monotonic()) > 0:
                time.sleep(min(wait, 0.05))
                self.client.poll()
            self.client.submit(self.fleet.step())
            self.fleet.drain_truth()
        self.sending_s = max(time.monotonic() - started, steps * period)
        self.client.flush()

    def close(self) -> None:
        """Close the client's sessions."""
        self.client.close()


@contextmanager
def running_stack(workdir: Path, score_hosts: int) -> Iterator[Stack]:
    """The demo's stack on free ports, stopped on the way out."""
    ports = Ports(*free_ports(len(fields(Ports))))
    stack = Stack(DemoConfig(ports=ports, workdir=workdir, score_hosts=score_hosts))
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))], 3)


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t, y)."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mt = sum(t for t, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (y - my) for t, y in points) / var if var else 0.0


def run_stage(stack: Stack, sender: Sender, offered: float, seconds: float) -> Stage:
    """Offer `offered` readings/s for `seconds` while watching the backlog; then let it drain.

    The backlog (accepted, not yet stored) is sampled every second. A pipeline that keeps up
    holds it level (rate × latency); one that does not lets it grow by the shortfall each
    second, so the slope over the stage's second half is the test, not the drain time.
    """
    stage = Stage(offered, seconds)
    leaders = {r.service.name: r.proc.pid for r in stack.processes._running}
    cpu_before = {name: group_cpu_seconds(pid) for name, pid in leaders.items()}
    own_cpu = time.process_time()
    before = set(sender.accepts.snapshot())
    since = datetime.now(UTC) - timedelta(seconds=2)
    written: dict[tuple[str, str], float] = {}
    table = PredictionsTable(stack.storage_connection)

    def look() -> None:
        for row in table.rows(written_since=since):
            written[(row.device_id, row.row_key)] = row.written_at

    thread = threading.Thread(target=sender.send, args=(offered, seconds), daemon=True)
    wall = time.monotonic()
    thread.start()
    backlog: list[tuple[float, float]] = []
    try:
        while thread.is_alive():
            thread.join(1.0)
            look()
            accepted_now = len(sender.accepts.accepted_at) - len(before)
            stored_now = sum(1 for k in written if k not in before)
            backlog.append((time.monotonic() - wall, accepted_now - stored_now))
        stage.seconds = sender.sending_s
        ended = time.monotonic()
        accepted = {k: t for k, t in sender.accepts.snapshot().items() if k not in before}
        stage.accepted = len(accepted)
        while not set(accepted) <= set(written) and time.monotonic() - ended < DRAIN_LIMIT_S:
            time.sleep(0.5)
            look()
        stage.lag_s = round(time.monotonic() - ended, 2)
        stage.drained = set(accepted) <= set(written)
    finally:
        table.close()
    half = [p for p in backlog if p[0] >= stage.seconds / 2]
    stage.backlog_growth_per_s = round(_slope(half), 1)
    elapsed = time.monotonic() - wall
    stage.cpu = {
        name: round((group_cpu_seconds(pid) - cpu_before[name]) / elapsed, 3)
        for name, pid in leaders.items()
    }
    stage.cpu["sender"] = round((time.process_time() - own_cpu) / elapsed, 3)  # this process
    stage.ingest_p50_ms = round(sender.client.stats().p50_ms, 1)
    latencies = [max(0.0, written[k] - t) for k, t in accepted.items() if k in written]
    stage.p50_s, stage.p99_s = _percentile(latencies, 0.5), _percentile(latencies, 0.99)
    return stage


def measure(quick: bool = False) -> dict[str, Any]:
    """Rising stages until one is not sustained; the figures of the best sustained one."""
    rates = (
        [500.0, 1500.0, 3000.0]
        if quick
        else [500.0, 1000.0, 1500.0, 2000.0, 2500.0, 3000.0, 3500.0, 4000.0, 5000.0]
    )
    seconds = 10.0 if quick else 30.0
    stages: list[Stage] = []
    workdir = LOGS_ROOT
    if workdir.exists():
        shutil.rmtree(workdir)
    print(f"  the stack's logs: {workdir / 'logs'}", file=sys.stderr, flush=True)
    with running_stack(workdir, score_hosts=2) as stack:
        sender = Sender(stack.ingest_url, stack.function_key)
        try:
            sender.send(100.0, 3.0)  # warm every connection and the model's first states
            for rate in rates:
                stage = run_stage(stack, sender, rate, seconds)
                stages.append(stage)
                print(_stage_line(stage), file=sys.stderr, flush=True)
                if not stage.sustained:
                    break
        finally:
            sender.close()
    return _figures(stages)


def _stage_line(s: Stage) -> str:
    busiest = max((s.cpu or {}).items(), key=lambda kv: kv[1], default=("?", 0.0))
    return (
        f"  offered {s.offered:>6,.0f}/s  accepted {s.accepted_per_s:>7,.0f}/s  "
        f"backlog {s.backlog_growth_per_s:+,.0f}/s  lag {s.lag_s}s  p50 {s.p50_s}s  "
        f"p99 {s.p99_s}s  ingest p50 {s.ingest_p50_ms} ms  "
        f"{'sustained' if s.sustained else 'NOT sustained'}; busiest {busiest[0]} "
        f"{busiest[1]:.2f} CPU-s/s"
    )


def _figures(stages: list[Stage]) -> dict[str, Any]:
    sustained = [s for s in stages if s.sustained]
    best = max(sustained, key=lambda s: s.accepted_per_s) if sustained else None
    limit = next((s for s in stages if not s.sustained), None)
    figures: dict[str, Any] = {
        "e2e_sustained_readings_per_s": round(best.accepted_per_s, 1) if best else 0.0,
        "e2e_p50_latency_s": best.p50_s if best else None,
        "e2e_p99_latency_s": best.p99_s if best else None,
        "e2e_stages": [
            {
                "offered_per_s": s.offered,
                "accepted_per_s": round(s.accepted_per_s, 1),
                "sustained": s.sustained,
                "lag_s": s.lag_s,
                "backlog_growth_per_s": s.backlog_growth_per_s,
                "p50_s": s.p50_s,
                "p99_s": s.p99_s,
                "cpu_per_s": s.cpu,
            }
            for s in stages
        ],
    }
    if best is not None and best.cpu:
        hosts = sum(v for k, v in best.cpu.items() if k.startswith("score-host"))
        figures["e2e_score_host_readings_per_cpu_s"] = (
            round(best.accepted_per_s / hosts, 1) if hosts else None
        )
        figures["e2e_cpu_per_process_at_best"] = best.cpu
    at = limit or best
    if at is not None and at.cpu:
        name, used = max(at.cpu.items(), key=lambda kv: kv[1])
        figures["e2e_bottleneck"] = name
        figures["e2e_bottleneck_cpu_per_s"] = used
    return figures


def main(argv: list[str] | None = None) -> None:
    """Run and print the figures, then one JSON line."""
    args = bench_parser(__doc__, "three short stages (~1 minute)").parse_args(argv)
    figures = measure(quick=args.quick)
    for key, value in figures.items():
        if key != "e2e_stages":
            print(f"{key}: {value}")
    emit_json(figures, args.json)


if __name__ == "__main__":
    main()
