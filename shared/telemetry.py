"""What an operator sees: metrics through OpenTelemetry, invocation ids on every log record.

Instruments are created on an OpenTelemetry API meter. With `APPLICATIONINSIGHTS_CONNECTION_STRING`
set, `configure_telemetry` hands the process to the Azure Monitor distro (imported only then:
the local stack and the tests never load it), which exports the metrics to `customMetrics` and
the `shared.*` log records, with their structured fields, to `traces`. Without it the meter is
OpenTelemetry's no-op, and a `MetricsLogger` writes a one-line summary of the same figures to the
log every `METRICS_LOG_INTERVAL_SECONDS`, so the local stack's logs show them too.

Every figure is also tallied here, cheaply (a lock and a dict per call; calls are per batch or
per request, never per reading), which is what the summary line and the tests read.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics as otel

from .errors import FleetscoreError

if TYPE_CHECKING:
    from .pipeline import BatchReport
    from .scoring import Scorer

__all__ = [
    "COUNTERS",
    "HISTOGRAMS",
    "OBSERVED",
    "MeteredScorer",
    "Metrics",
    "MetricsLogger",
    "batch_fields",
    "configure_telemetry",
    "current_invocation",
    "install_log_context",
    "invocation",
    "new_invocation_id",
]

log = logging.getLogger(__name__)

METER_NAME = "fleetscore"
EXPORTED_LOGGER = "shared"  # the loggers whose records (and their attributes) go to `traces`

# name -> (unit, description); the names are what Application Insights shows in customMetrics.
COUNTERS: Mapping[str, tuple[str, str]] = {
    "fleetscore.ingest.readings_accepted": ("{reading}", "Readings the ingest published"),
    "fleetscore.ingest.requests_rejected": (
        "{request}",
        "Ingest requests answered 4xx/5xx (attribute status)",
    ),
    "fleetscore.score.batches": ("{batch}", "Trigger batches the score function completed"),
    "fleetscore.score.failures": ("{batch}", "Trigger batches that failed (to be redelivered)"),
    "fleetscore.score.readings": ("{reading}", "Readings the score function took in"),
    "fleetscore.predictions.stored": ("{prediction}", "Predictions written to Table Storage"),
    "fleetscore.anomalies": ("{prediction}", "Stored predictions flagged as anomalies"),
    "fleetscore.dead_letters": ("{letter}", "Dead letters written (attribute source)"),
    "fleetscore.aml.requests": ("{request}", "AML scoring attempts (attribute status)"),
    "fleetscore.aml.throttles": ("{request}", "AML answers 429 or 503 (attribute status)"),
}
HISTOGRAMS: Mapping[str, tuple[str, str]] = {
    "fleetscore.aml.duration": ("ms", "Wall time of one AML scoring attempt"),
    "fleetscore.score.step.duration": ("ms", "Wall time of one pipeline step (attribute step)"),
    "fleetscore.score.batch_size": ("{reading}", "Readings per trigger batch"),
    "fleetscore.consumer.lag": ("ms", "Now minus the enqueued time of a batch's newest event"),
}
# Cumulative counts read from a component when metrics are collected (observable counters).
OBSERVED: Mapping[str, tuple[str, str]] = {
    "fleetscore.powerbi.rows_dropped": ("{row}", "Power BI rows dropped (limits, age, errors)"),
    "fleetscore.results.predictions_dropped": (
        "{prediction}",
        "Predictions the results hub sink dropped",
    ),
}

_invocation: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "fleetscore_invocation", default=None
)
_factory_lock = threading.Lock()
_factory_installed = False

Attributes = tuple[tuple[str, str], ...]


def new_invocation_id() -> str:
    """An id for an invocation whose host passed no `context` (the local host)."""
    return str(uuid.uuid4())


def current_invocation() -> str | None:
    """The invocation id this thread is working for, if any."""
    return _invocation.get()


@contextmanager
def invocation(invocation_id: str) -> Iterator[str]:
    """Tag every log record made in this block (this thread) with `invocation_id`."""
    if not _factory_installed:
        install_log_context()
    token = _invocation.set(invocation_id)
    try:
        yield invocation_id
    finally:
        _invocation.reset(token)


def install_log_context() -> None:
    """Give every `LogRecord` an `invocation_id` attribute (None outside an invocation).

    A record factory rather than a filter: the Functions worker and the local host own the
    handlers, and a logger's filters do not reach records of its children. The previous factory
    is kept and called first, so the worker's own factory (if any) still runs. Idempotent.
    """
    global _factory_installed
    with _factory_lock:
        if _factory_installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            record.invocation_id = _invocation.get()
            return record

        logging.setLogRecordFactory(factory)
        _factory_installed = True


def _key(attributes: Mapping[str, str | int]) -> Attributes:
    return tuple(sorted((k, str(v)) for k, v in attributes.items()))


@dataclass(slots=True)
class _Stat:
    count: int = 0
    total: float = 0.0
    maximum: float = 0.0


class Metrics:
    """The operator's instruments: OpenTelemetry counters and histograms, tallied locally too.

    `meter` defaults to the global OpenTelemetry meter: a no-op until a meter provider is set
    (by the Azure Monitor distro, or a test's in-memory reader), then real, without rebuilding.
    """

    def __init__(self, meter: otel.Meter | None = None) -> None:
        meter = meter or otel.get_meter(METER_NAME)
        self._meter = meter
        self._counters = {
            name: meter.create_counter(name, unit=unit, description=text)
            for name, (unit, text) in COUNTERS.items()
        }
        self._histograms = {
            name: meter.create_histogram(name, unit=unit, description=text)
            for name, (unit, text) in HISTOGRAMS.items()
        }
        self._lock = threading.Lock()
        self._sums: dict[tuple[str, Attributes], float] = {}
        self._stats: dict[tuple[str, Attributes], _Stat] = {}
        self._observed: dict[str, list[Callable[[], float]]] = {}
        self._observed_seen: dict[str, float] = {}

    def add(self, name: str, value: float, **attributes: str | int) -> None:
        """Add to a counter (a name in `COUNTERS`); zero adds nothing."""
        if not value:
            return
        self._counters[name].add(value, attributes or None)
        key = (name, _key(attributes))
        with self._lock:
            self._sums[key] = self._sums.get(key, 0) + value

    def record(self, name: str, value: float, **attributes: str | int) -> None:
        """Record one value of a histogram (a name in `HISTOGRAMS`)."""
        self._histograms[name].record(value, attributes or None)
        key = (name, _key(attributes))
        with self._lock:
            stat = self._stats.setdefault(key, _Stat())
            stat.count += 1
            stat.total += value
            stat.maximum = max(stat.maximum, value)

    def observe(self, name: str, read: Callable[[], float]) -> None:
        """Report a component's cumulative count (a name in `OBSERVED`) when metrics are read."""
        with self._lock:
            first = name not in self._observed
            self._observed.setdefault(name, []).append(read)
        if first:
            unit, text = OBSERVED[name]
            self._meter.create_observable_counter(
                name, callbacks=[self._callback(name)], unit=unit, description=text
            )

    def _callback(self, name: str) -> Callable[[otel.CallbackOptions], Iterable[otel.Observation]]:
        def collect(_options: otel.CallbackOptions) -> Iterable[otel.Observation]:
            return [otel.Observation(self._read(name))]

        return collect

    def _read(self, name: str) -> float:
        with self._lock:
            readers = list(self._observed.get(name, ()))
        return float(sum(read() for read in readers))

    def record_batch(self, report: BatchReport) -> None:
        """Everything one scoring batch did, from its report."""
        self.add("fleetscore.score.batches", 1)
        self.add("fleetscore.score.readings", report.readings)
        self.add("fleetscore.predictions.stored", report.predictions)
        self.add("fleetscore.anomalies", report.anomalies)
        for source, n in report.dead_letter_sources.items():
            self.add("fleetscore.dead_letters", n, source=source)
        self.record("fleetscore.score.batch_size", report.readings)
        for step, ms in report.timings_ms.items():
            self.record("fleetscore.score.step.duration", ms, step=step)
        if report.lag_ms is not None:
            self.record("fleetscore.consumer.lag", report.lag_ms)

    def counts(self) -> dict[str, float]:
        """Counter totals since the last `take_summary`, by name (attributes added up)."""
        out: dict[str, float] = {}
        with self._lock:
            for (name, _), value in self._sums.items():
                out[name] = out.get(name, 0) + value
        return out

    def take_summary(self) -> str:
        """One line of what happened since the previous call, then start counting afresh.

        Counters by attribute (`fleetscore.dead_letters{source=model} 3`), histograms as count,
        mean and maximum, observed counts as the increase. Empty when nothing happened.
        """
        with self._lock:
            sums, stats = self._sums, self._stats
            self._sums, self._stats = {}, {}
            observed = list(self._observed)
        parts = [f"{_label(name, attrs)} {v:g}" for (name, attrs), v in sorted(sums.items())]
        for (name, attrs), s in sorted(stats.items()):
            parts.append(
                f"{_label(name, attrs)} n={s.count} mean={s.total / s.count:.1f} "
                f"max={s.maximum:.1f}"
            )
        for name in observed:
            now = self._read(name)
            increase = now - self._observed_seen.get(name, 0.0)
            self._observed_seen[name] = now
            if increase:
                parts.append(f"{_label(name, ())} {increase:g}")
        return ", ".join(parts)


def _label(name: str, attrs: Attributes) -> str:
    short = name.removeprefix(f"{METER_NAME}.")
    if not attrs:
        return short
    return short + "{" + ",".join(f"{k}={v}" for k, v in attrs) + "}"


class MetricsLogger:
    """Logs `Metrics.take_summary()` every `interval` seconds on a daemon thread.

    Used when nothing exports the metrics (no Application Insights): the local stack's logs
    then show readings in, scored, stored, dead-lettered and the AML figures once a minute.
    """

    def __init__(
        self,
        metrics: Metrics,
        *,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be > 0")
        self.metrics = metrics
        self.interval = interval
        self._clock = clock
        self._since = clock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def report(self) -> str:
        """Log one summary line now (nothing when there is nothing to say); return it.

        The line names the seconds it covers: an interval, or less for the last one at exit.
        """
        now = self._clock()
        line = self.metrics.take_summary()
        if line:
            log.info("metrics (last %.0fs): %s", now - self._since, line)
        self._since = now
        return line

    def start(self) -> None:
        """Start the reporting thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="metrics-log", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop the thread and log what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self.report()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.report()
            except Exception:  # a broken summary must not end the reporting
                log.exception("metrics summary failed")


class MeteredScorer:
    """A `Scorer` around the AML client that times each attempt and counts throttles.

    It sits between the micro-batcher and the client, so it sees every attempt, retries
    included, with the HTTP status the client classified (429 and 503 are AML's throttles).
    """

    def __init__(
        self,
        scorer: Scorer,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.scorer = scorer
        self.metrics = metrics
        self._clock = clock

    def score(self, body: bytes) -> dict[str, Any]:
        """Score through the wrapped client; its errors pass through unchanged."""
        started = self._clock()
        status = "200"
        try:
            return self.scorer.score(body)
        except FleetscoreError as exc:
            code = getattr(exc, "status", None)
            status = str(code) if code is not None else "unreachable"
            raise
        except Exception:
            status = "error"
            raise
        finally:
            elapsed_ms = (self._clock() - started) * 1000
            self.metrics.record("fleetscore.aml.duration", elapsed_ms, status=status)
            self.metrics.add("fleetscore.aml.requests", 1, status=status)
            if status in ("429", "503"):
                self.metrics.add("fleetscore.aml.throttles", 1, status=status)

    def close(self) -> None:
        """Close the wrapped client, if it has anything to close (a stand-in may not)."""
        close = getattr(self.scorer, "close", None)
        if close is not None:
            close()


def batch_fields(report: BatchReport) -> dict[str, object]:
    """The batch log line's figures as flat record attributes (customDimensions on Azure)."""
    fields: dict[str, object] = {
        "fleetscore.events": report.events,
        "fleetscore.readings": report.readings,
        "fleetscore.devices": report.devices,
        "fleetscore.requests": report.requests,
        "fleetscore.predictions": report.predictions,
        "fleetscore.anomalies": report.anomalies,
        "fleetscore.dead_letters": report.dead_letters,
    }
    if report.lag_ms is not None:
        fields["fleetscore.lag_ms"] = round(report.lag_ms, 1)
    for step, ms in report.timings_ms.items():
        fields[f"fleetscore.ms.{step}"] = round(ms, 1)
    return fields


def configure_telemetry(
    *,
    connection_string: str,
    log_interval: float,
    configure_azure_monitor: Callable[..., None] | None = None,
) -> tuple[Metrics, MetricsLogger | None]:
    """Set up export (Application Insights when a connection string is given) and the metrics.

    With a connection string the Azure Monitor distro is configured (`configure_azure_monitor`
    stands in for it in tests): metrics and the `shared` loggers' records are exported; tracing
    is off, since the Functions host already records each invocation as a request and a span per
    Table transaction would cost CPU on the hot path. Without one, a `MetricsLogger` is started
    when `log_interval` > 0. Invocation ids are put on log records either way.
    """
    install_log_context()
    if connection_string:
        if configure_azure_monitor is None:
            from azure.monitor.opentelemetry import configure_azure_monitor
        configure_azure_monitor(
            connection_string=connection_string,
            logger_name=EXPORTED_LOGGER,
            disable_tracing=True,
        )
        exported = logging.getLogger(EXPORTED_LOGGER)
        if exported.getEffectiveLevel() > logging.INFO:  # the batch lines are INFO
            exported.setLevel(logging.INFO)
        log.info("metrics and logs export to Application Insights")
        return Metrics(), None
    metrics = Metrics()
    if log_interval <= 0:
        return metrics, None
    reporter = MetricsLogger(metrics, interval=log_interval)
    reporter.start()
    return metrics, reporter
