"""The online loop: step the fleet in accelerated simulated time and send every reading.

Simulated time runs at `speed` times real time: each `fleet.step()` covers `interval_s`
simulated seconds, so a step is due every `interval_s / speed` real seconds. The ingest refuses
readings more than 5 minutes in the future or older than 7 days, so the fleet starts at
`real_now - duration_s * (speed - 1)`: its clock catches up with the wall clock exactly when
the run ends, and every timestamp sent lies in the past. `plan_start` computes that start and
refuses a speed and duration that would reach back past the 7-day window.

Example:
    >>> start = plan_start(now, speed=60, duration_s=300)  # doctest: +SKIP
    >>> fleet = Fleet(FleetConfig(devices=50), start=start)  # doctest: +SKIP
    >>> with IngestClient(url, key) as client:  # doctest: +SKIP
    ...     exit_code = run(fleet, client, speed=60, duration_s=300)
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol, TextIO

from .client import ClientStats, IngestClient

__all__ = [
    "EXIT_FAILED",
    "EXIT_FATAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "MAX_LOOKBACK",
    "FleetLike",
    "TruthSink",
    "format_progress",
    "format_summary",
    "plan_start",
    "run",
]

EXIT_OK = 0
EXIT_FAILED = 1  # some reading was given up on, wrongly rejected or wrongly accepted
EXIT_FATAL = 2  # a configuration error (key, URL, size) stopped the run
EXIT_INTERRUPTED = 130
# The ingest keeps readings up to 7 days old; an hour of margin covers slow sends and skew.
MAX_LOOKBACK = timedelta(days=7) - timedelta(hours=1)
_IDLE_TICK_S = 0.1  # how often a waiting loop lets the client send a lingering partial batch


class FleetLike(Protocol):
    """What the loop needs from `simulator.fleet.Fleet`."""

    @property
    def now(self) -> datetime:
        """Simulated time of the next step."""
        ...

    def step(self) -> list[dict[str, Any]]:
        """Advance one interval for every device and return its readings."""
        ...

    def drain_truth(self) -> list[dict[str, Any]]:
        """Return the ground-truth records produced since the last call."""
        ...


class TruthSink(Protocol):
    """Where ground-truth records go (`simulator.truth.TruthWriter` in the CLI)."""

    def write(self, records: list[dict[str, Any]]) -> None:
        """Append records."""
        ...


def plan_start(now: datetime, *, speed: float, duration_s: float) -> datetime:
    """Return the fleet's start so that its clock meets `now + duration_s` at the end.

    Args:
        now: The wall clock at the start of the run (timezone-aware UTC).
        speed: Simulated seconds per real second (>= 1).
        duration_s: Real seconds the run lasts.

    Raises:
        ValueError: The start would be older than the ingest keeps (7 days minus a margin);
            the message says which speed or duration fits.
    """
    if speed < 1:
        raise ValueError(f"--speed must be >= 1 (real time or faster), got {speed}")
    if duration_s <= 0:
        raise ValueError(f"--duration must be > 0 seconds, got {duration_s}")
    lookback = timedelta(seconds=duration_s * (speed - 1))
    if lookback > MAX_LOOKBACK:
        budget = MAX_LOOKBACK.total_seconds()
        raise ValueError(
            f"--speed {speed:g} for --duration {duration_s:g}s would start the fleet "
            f"{lookback.total_seconds() / 86400:.1f} days ago, but ingest refuses readings "
            f"older than 7 days: use --speed {1 + budget / duration_s:.0f} or less, "
            f"or --duration {budget / (speed - 1):.0f} or less"
        )
    return now - lookback


_LOG_EVERY_S = 10.0  # seconds between progress lines when the output is not a terminal


def format_progress(simulated: datetime, stats: ClientStats) -> str:
    """One progress line: simulated time, rate, counters and request latency."""
    return (
        f"sim {simulated:%Y-%m-%d %H:%M:%S}Z  {stats.rate:,.0f} readings/s  "
        f"accepted {stats.accepted:,}  rejected {stats.rejected + stats.bad_rejected:,}"
        f" (expected {stats.bad_rejected:,})  retries {stats.retries:,}  "
        f"p50 {stats.p50_ms:.0f} ms  p99 {stats.p99_ms:.0f} ms"
    )


def format_summary(stats: ClientStats, *, steps: int) -> str:
    """The end-of-run report, several lines, ending with the verdict."""
    lines = [
        f"steps {steps:,}  readings {stats.submitted:,}  requests {stats.requests:,}  "
        f"in {stats.elapsed_s:.1f} s ({stats.rate:,.0f} readings/s)",
        f"accepted {stats.accepted:,}  rejected as expected {stats.bad_rejected:,}  "
        f"rejected unexpectedly {stats.rejected:,}  bad accepted {stats.bad_accepted:,}",
        f"retries {stats.retries:,}  gave up on {stats.failed:,}  "
        f"duplicate acks {stats.duplicate_acks:,}  "
        f"latency p50 {stats.p50_ms:.0f} ms  p99 {stats.p99_ms:.0f} ms",
    ]
    if stats.fatal:
        lines.append(f"stopped: {stats.fatal}")
    elif stats.ok:
        lines.append("ok: every reading sent was confirmed")
    else:
        lines.append("NOT OK: some readings were not confirmed (see the counts above)")
        if stats.last_error:
            lines.append(f"last error: {stats.last_error}")
    return "\n".join(lines)


def run(
    fleet: FleetLike,
    client: IngestClient,
    *,
    speed: float,
    duration_s: float,
    interval_s: float | None = None,
    truth: TruthSink | None = None,
    progress: TextIO | None = sys.stderr,
    progress_every_s: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    stop: threading.Event | None = None,
) -> int:
    """Step `fleet` for `duration_s` real seconds at `speed`, sending through `client`.

    The client is flushed but not closed (its owner closes it). Truth records drained after
    each step go to `truth` as they appear, so an interrupted run still leaves its labels.

    Args:
        fleet: The fleet, already started at `plan_start(...)`.
        client: Sends the readings and keeps the account.
        speed: Simulated seconds per real second.
        duration_s: Real seconds to run.
        interval_s: Simulated seconds per step; defaults to `fleet.config.interval_s`.
        truth: Receives ground-truth records, or None to drop them.
        progress: Stream for the updating progress line and the summary; None for silence.
        progress_every_s: Real seconds between progress updates.
        clock: Monotonic seconds.
        sleep: Waits until the next step is due.
        stop: Set (by a signal handler, say) to end the run like Ctrl-C, but between steps:
            a KeyboardInterrupt can land while the client holds a lock and strand it.

    Returns:
        `EXIT_OK` when every reading sent was confirmed, `EXIT_FATAL` after a configuration
        error, `EXIT_INTERRUPTED` on Ctrl-C, `EXIT_FAILED` otherwise.
    """
    if interval_s is None:
        interval_s = float(fleet.config.interval_s)  # type: ignore[attr-defined]
    period = interval_s / speed
    # Simulated span / step length; the epsilon keeps 1.0 / (10 / 600) from rounding up to 61.
    total = max(1, math.ceil(duration_s * speed / interval_s - 1e-9))
    started = clock()
    last_shown = -math.inf
    steps = 0
    interrupted = False
    stopped = stop.is_set if stop is not None else lambda: False
    try:
        while steps < total and client.fatal is None and not stopped():
            due = started + steps * period
            while (wait := due - clock()) > 0 and not stopped():
                sleep(min(wait, progress_every_s, _IDLE_TICK_S))
                client.poll()  # a partial batch must not wait for the next step to go out
                last_shown = _show(progress, fleet, client, clock, last_shown, progress_every_s)
            if stopped():
                break
            client.submit(fleet.step())
            steps += 1
            records = fleet.drain_truth()
            if truth is not None and records:
                truth.write(records)
            last_shown = _show(progress, fleet, client, clock, last_shown, progress_every_s)
        client.flush()
    except KeyboardInterrupt:
        interrupted = True
        client.flush()
    interrupted = interrupted or stopped()
    stats = client.stats()
    if progress is not None:
        final = format_progress(fleet.now, stats)
        progress.write(("\r" + final.ljust(120) if _isatty(progress) else final) + "\n")
        progress.write(format_summary(stats, steps=steps) + "\n")
        progress.flush()
    if interrupted:
        return EXIT_INTERRUPTED
    if stats.fatal is not None:
        return EXIT_FATAL
    return EXIT_OK if stats.ok else EXIT_FAILED


def _show(
    stream: TextIO | None,
    fleet: FleetLike,
    client: IngestClient,
    clock: Callable[[], float],
    last: float,
    every: float,
) -> float:
    """Rewrite the progress line when `every` seconds have passed; return when it was shown.

    On a terminal the line is rewritten in place; into a file or pipe (a log, CI) a plain line
    goes out every ``_LOG_EVERY_S`` seconds instead, so the log stays readable line by line.
    """
    now = clock()
    if stream is None:
        return last
    tty = _isatty(stream)
    if now - last < (every if tty else max(every, _LOG_EVERY_S)):
        return last
    line = format_progress(fleet.now, client.stats())
    stream.write("\r" + line.ljust(120) if tty else line + "\n")
    stream.flush()
    return now


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
