"""Metrics, the log summary, invocation ids on records, and when Application Insights is used."""

from __future__ import annotations

import json
import logging
import random
import sys
import threading
import types
from datetime import UTC, datetime, timedelta

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from shared import telemetry
from shared.errors import PermanentError, TransientError
from shared.events import IncomingEvent, encode_device_events
from shared.ingest import handle_ingest
from shared.microbatch import MicroBatcher
from shared.pipeline import BatchReport, ScoringPipeline
from shared.readings import Reading
from shared.scoring import AmlClient
from shared.states import StateCache
from shared.store import InMemoryTableStore
from shared.telemetry import MeteredScorer, Metrics, MetricsLogger, configure_telemetry
from tests.support.aml_standin import KEY

T0 = datetime(2026, 11, 27, 6, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
ENQUEUED = NOW - timedelta(seconds=2)


class Reader:
    """Metrics through a real OpenTelemetry SDK meter, read from memory."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])
        self.metrics = Metrics(self.provider.get_meter("fleetscore"))

    def points(self) -> dict[str, dict[tuple, object]]:
        """name -> {attributes: value (sum) or (count, sum) for histograms}."""
        out: dict[str, dict[tuple, object]] = {}
        data = self.reader.get_metrics_data()
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    for pt in metric.data.data_points:
                        attrs = tuple(sorted((pt.attributes or {}).items()))
                        value = pt.value if hasattr(pt, "value") else (pt.count, pt.sum)
                        out.setdefault(metric.name, {})[attrs] = value
        return out


def events(groups: dict[str, list[Reading]], *, extra: list[bytes] = ()) -> list[IncomingEvent]:
    bodies = [e.body for e in encode_device_events(groups, ingested_at=NOW)] + list(extra)
    return [
        IncomingEvent(b, partition="3", offset=str(i), sequence_number=i, enqueued_time=ENQUEUED)
        for i, b in enumerate(bodies)
    ]


def readings(device: str, n: int) -> list[Reading]:
    return [Reading(device, T0 + timedelta(seconds=i), {"rpm": 50.0}) for i in range(n)]


@pytest.fixture
def reader() -> Reader:
    r = Reader()
    yield r
    r.provider.shutdown()


@pytest.fixture
def pipeline(aml, reader):
    t = [0.0]
    batcher = MicroBatcher(
        MeteredScorer(AmlClient(aml.url, KEY), reader.metrics),
        clock=lambda: t[0],
        sleep=lambda s: t.__setitem__(0, t[0] + s),
        rng=random.Random(0),
    )
    store = InMemoryTableStore()
    yield ScoringPipeline(
        store=store, batcher=batcher, states=StateCache(store, ttl=0), metrics=reader.metrics
    )
    batcher.close()
    batcher.scorer.close()


def test_metrics_move_for_a_processed_batch(pipeline, reader, aml):
    aml.script.faults += [(429, {"Retry-After": "0"}, b""), (503, {}, b"")]
    report = pipeline.process(
        events({"a": readings("a", 3), "b": readings("b", 2)}, extra=[b"garbage"]), now=NOW
    )
    assert (report.readings, report.predictions, report.dead_letters) == (5, 5, 1)
    assert report.dead_letter_sources == {"event": 1}
    assert report.lag_ms == 2000.0
    points = reader.points()
    assert points["fleetscore.score.batches"] == {(): 1}
    assert points["fleetscore.score.readings"] == {(): 5}
    assert points["fleetscore.predictions.stored"] == {(): 5}
    assert points["fleetscore.dead_letters"] == {(("source", "event"),): 1}
    assert points["fleetscore.aml.throttles"] == {(("status", "429"),): 1, (("status", "503"),): 1}
    assert points["fleetscore.aml.requests"] == {
        (("status", "429"),): 1,
        (("status", "503"),): 1,
        (("status", "200"),): 1,
    }
    assert {a for a in points["fleetscore.aml.duration"]} == {
        (("status", "200"),),
        (("status", "429"),),
        (("status", "503"),),
    }
    assert points["fleetscore.consumer.lag"] == {(): (1, 2000.0)}
    assert points["fleetscore.score.batch_size"] == {(): (1, 5)}
    steps = {dict(a)["step"] for a in points["fleetscore.score.step.duration"]}
    assert {"states_read", "score", "anomalies_write", "predictions_write"} <= steps


def test_batch_log_line_keeps_its_text_and_carries_structured_fields(pipeline, caplog):
    caplog.set_level(logging.INFO, logger="shared.pipeline")
    with telemetry.invocation("inv-1"):
        pipeline.process(events({"a": readings("a", 2)}), now=NOW)
    [record] = [r for r in caplog.records if r.getMessage().startswith("scored ")]
    assert record.getMessage().startswith(
        "scored 2 readings of 1 devices from 1 events in 1 requests: "
        "2 predictions, 0 anomalies, 0 dead letters (ms: states_read "
    )
    fields = record.__dict__
    assert fields["invocation_id"] == "inv-1"
    assert (fields["fleetscore.readings"], fields["fleetscore.predictions"]) == (2, 2)
    assert fields["fleetscore.lag_ms"] == 2000.0
    assert fields["fleetscore.ms.score"] >= 0


def test_metered_scorer_times_each_attempt_and_counts_only_429_and_503_as_throttles():
    class Script:
        def __init__(self) -> None:
            self.answers = [
                TransientError("busy", status=429),
                TransientError("down", status=503),
                TransientError("unreachable"),
                PermanentError("bad", status=400),
                {"ok": True},
            ]
            self.closed = False

        def score(self, body: bytes) -> dict:
            answer = self.answers.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return answer

        def close(self) -> None:
            self.closed = True

    ticks = iter([0.0, 0.010, 1.0, 1.5, 2.0, 2.001, 3.0, 3.002, 4.0, 4.025])
    metrics = Metrics()
    inner = Script()
    scorer = MeteredScorer(inner, metrics, clock=lambda: next(ticks))
    for expected in (TransientError, TransientError, TransientError, PermanentError):
        with pytest.raises(expected):
            scorer.score(b"{}")
    assert scorer.score(b"{}") == {"ok": True}
    scorer.close()
    assert inner.closed
    assert metrics.counts() == {"fleetscore.aml.requests": 5, "fleetscore.aml.throttles": 2}
    line = metrics.take_summary()
    assert "aml.throttles{status=429} 1" in line
    assert "aml.throttles{status=503} 1" in line
    assert "aml.requests{status=unreachable} 1" in line
    assert "aml.duration{status=429} n=1 mean=10.0 max=10.0" in line
    assert "aml.duration{status=503} n=1 mean=500.0 max=500.0" in line
    assert "aml.duration{status=200} n=1 mean=25.0 max=25.0" in line


class Hub:
    def __init__(self, fail: Exception | None = None) -> None:
        self.fail = fail

    def publish(self, events) -> None:
        if self.fail:
            raise self.fail


def body(n: int) -> bytes:
    return json.dumps(
        [
            {"device_id": f"d{i % 2}", "timestamp": "2026-11-27T06:59:00Z", "metrics": {"x": 1}}
            for i in range(n)
        ]
    ).encode()


def test_ingest_counts_accepted_readings_and_rejected_requests_by_status(caplog):
    caplog.set_level(logging.INFO, logger="shared.ingest")
    metrics = Metrics()
    kwargs = {"content_type": "application/json", "now": NOW, "metrics": metrics}
    assert handle_ingest(body(3), publisher=Hub(), **kwargs).status == 202
    assert handle_ingest(body(2), publisher=Hub(), **kwargs).status == 202
    assert handle_ingest(b"[{}]", publisher=Hub(), **kwargs).status == 400
    assert handle_ingest(b"not json", publisher=Hub(), **kwargs).status == 415
    assert handle_ingest(body(1), publisher=Hub(TransientError("down")), **kwargs).status == 503
    assert metrics.counts() == {
        "fleetscore.ingest.readings_accepted": 5,
        "fleetscore.ingest.requests_rejected": 3,
    }
    [first, *_] = [r for r in caplog.records if r.getMessage().startswith("ingest accepted")]
    assert first.getMessage().startswith("ingest accepted 3 readings from 2 devices (publish ")
    assert (first.__dict__["fleetscore.readings"], first.__dict__["fleetscore.events"]) == (3, 2)


def test_observed_counts_are_read_when_metrics_are_collected(reader):
    dropped = [4]
    reader.metrics.observe("fleetscore.powerbi.rows_dropped", lambda: dropped[0])
    assert reader.points()["fleetscore.powerbi.rows_dropped"] == {(): 4}
    assert reader.metrics.take_summary() == "powerbi.rows_dropped 4"
    dropped[0] = 7
    assert reader.metrics.take_summary() == "powerbi.rows_dropped 3"
    assert reader.metrics.take_summary() == ""


def test_summary_line_reports_then_starts_afresh(caplog):
    caplog.set_level(logging.INFO, logger="shared.telemetry")
    metrics = Metrics()
    metrics.record_batch(
        BatchReport(
            events=2,
            readings=10,
            predictions=9,
            dead_letters=1,
            timings_ms={"score": 12.0},
            dead_letter_sources={"model": 1},
            lag_ms=1500.0,
        )
    )
    ticks = iter([1000.0, 1060.4, 1120.0])
    reporter = MetricsLogger(metrics, interval=60, clock=lambda: next(ticks))
    line = reporter.report()
    assert line == (
        "dead_letters{source=model} 1, predictions.stored 9, score.batches 1, "
        "score.readings 10, consumer.lag n=1 mean=1500.0 max=1500.0, "
        "score.batch_size n=1 mean=10.0 max=10.0, "
        "score.step.duration{step=score} n=1 mean=12.0 max=12.0"
    )
    assert caplog.messages == [f"metrics (last 60s): {line}"]
    assert reporter.report() == ""
    assert len(caplog.messages) == 1


class Seen(logging.Handler):
    """Sets `event` when a record with `text` is logged, from any thread."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text, self.event = text, threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == self.text:
            self.event.set()


def test_metrics_logger_reports_on_its_own_thread_until_closed(caplog):
    caplog.set_level(logging.INFO, logger="shared.telemetry")
    seen = Seen("metrics (last 0s): ingest.readings_accepted 3")
    logging.getLogger("shared.telemetry").addHandler(seen)
    try:
        metrics = Metrics()
        metrics.add("fleetscore.ingest.readings_accepted", 3)
        reporter = MetricsLogger(metrics, interval=0.01, clock=lambda: 0.0)
        reporter.start()
        assert seen.event.wait(timeout=10), caplog.messages
        metrics.add("fleetscore.ingest.readings_accepted", 2)
        reporter.close()
    finally:
        logging.getLogger("shared.telemetry").removeHandler(seen)
    assert not reporter._thread.is_alive()
    assert caplog.messages[-1] == "metrics (last 0s): ingest.readings_accepted 2"


def test_invocation_id_is_on_every_record_inside_the_block_only(caplog):
    caplog.set_level(logging.INFO)
    other = logging.getLogger("somewhere.else")
    with telemetry.invocation("abc-123"):
        assert telemetry.current_invocation() == "abc-123"
        other.info("inside")
    other.info("outside")
    inside, outside = caplog.records
    assert inside.invocation_id == "abc-123"
    assert outside.invocation_id is None
    assert telemetry.current_invocation() is None


def test_without_a_connection_string_nothing_exports(monkeypatch):
    monkeypatch.setitem(sys.modules, "azure.monitor.opentelemetry", None)  # import would fail
    metrics, reporter = configure_telemetry(connection_string="", log_interval=0)
    assert reporter is None
    metrics.add("fleetscore.score.batches", 1)  # the API's no-op meter: nothing to export to
    metrics, reporter = configure_telemetry(connection_string="", log_interval=60)
    assert isinstance(reporter, MetricsLogger)
    assert reporter.interval == 60
    reporter.close()


def test_with_a_connection_string_the_azure_monitor_distro_is_configured(monkeypatch):
    calls = []
    distro = types.ModuleType("azure.monitor.opentelemetry")
    distro.configure_azure_monitor = lambda **kwargs: calls.append(kwargs)
    monkeypatch.setitem(sys.modules, "azure.monitor.opentelemetry", distro)
    conn = "InstrumentationKey=00000000-0000-0000-0000-000000000000"
    shared_logger, root = logging.getLogger("shared"), logging.getLogger()
    saved = shared_logger.level, root.level
    shared_logger.setLevel(logging.NOTSET)
    root.setLevel(logging.WARNING)  # Python's default: INFO records would not reach the export
    try:
        metrics, reporter = configure_telemetry(connection_string=conn, log_interval=60)
        assert shared_logger.getEffectiveLevel() == logging.INFO
    finally:
        shared_logger.setLevel(saved[0])
        root.setLevel(saved[1])
    assert calls == [{"connection_string": conn, "logger_name": "shared", "disable_tracing": True}]
    assert reporter is None  # Application Insights has the figures: no summary line
    assert isinstance(metrics, Metrics)


def test_settings_name_the_connection_string_and_the_interval():
    from shared.settings import load_settings

    env = {
        "EVENTHUB_CONNECTION": "Endpoint=sb://localhost;UseDevelopmentEmulator=true",
        "TABLES_CONNECTION": "UseDevelopmentStorage=true",
        "AML_ENDPOINT_URL": "http://localhost:5001/score",
        "AML_ENDPOINT_KEY": "k",
    }
    s = load_settings(env)
    assert (s.applicationinsights_connection_string, s.metrics_log_interval_seconds) == ("", 60)
    s = load_settings(
        env
        | {
            "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=x",
            "METRICS_LOG_INTERVAL_SECONDS": "0",
        }
    )
    assert (s.applicationinsights_connection_string, s.metrics_log_interval_seconds) == (
        "InstrumentationKey=x",
        0,
    )
