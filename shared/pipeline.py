"""The scoring use case: a batch of events in, predictions stored, dead letters kept, sinks fed.

Write order is what makes redelivery harmless: dead letters (keyed by origin event and
payload) and the anomaly index first, then each device's predictions (idempotent upserts keyed
by reading) in one transaction with its next state, conditional on the ETag the state was read
with. If anything transient fails before a device's transaction lands the invocation raises,
the batch comes again, and that device is scored again from the same state into the same rows.
A device whose state changed under this worker (its partition moved and came back) is scored
again from what is stored, on its own.

Only transient failures (and a misconfigured endpoint) may fail the invocation: the trigger's
retry policy redelivers forever, so anything that would fail again the same way (a row the
table service refuses, a model answer that breaks the contract) becomes a dead letter instead,
or the partition would stall.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from .deadletters import DeadLetter
from .errors import ConflictError, PermanentError, ValidationError
from .events import IncomingEvent, decode_event
from .microbatch import MicroBatcher, ScoreOutcome
from .predictions import DeviceResult, Prediction
from .readings import Reading
from .states import DeviceWrite, StateCache, StateStore, Written
from .telemetry import Metrics, batch_fields

__all__ = ["BatchReport", "PredictionSink", "ScoreStore", "ScoringPipeline"]

log = logging.getLogger(__name__)


class ScoreStore(StateStore, Protocol):
    """The writes the pipeline needs from the table store."""

    def write_devices(
        self, writes: Sequence[DeviceWrite], *, model_version: str, now: datetime
    ) -> Written:
        """Store each device's predictions with its next state, the state only over the row read."""
        ...

    def upsert_anomalies(self, predictions: Sequence[Prediction]) -> None:
        """Index the anomalous ones by day."""
        ...

    def add_dead_letters(self, letters: Sequence[DeadLetter]) -> None:
        """Keep what could not be processed."""
        ...


class PredictionSink(Protocol):
    """Somewhere live figures go (Power BI, a results hub); must never raise or block."""

    def offer(self, predictions: Sequence[Prediction]) -> None:
        """Take the batch's predictions."""
        ...


@dataclass(slots=True)
class BatchReport:
    """What one batch did, for logs and tests."""

    events: int = 0
    readings: int = 0
    devices: int = 0
    predictions: int = 0
    anomalies: int = 0
    dead_letters: int = 0
    requests: int = 0
    reasons: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)  # per step, for logs and benches
    dead_letter_sources: dict[str, int] = field(default_factory=dict)  # event, model, store
    lag_ms: float | None = None  # now minus the newest event's enqueued time: consumer lag


@dataclass(frozen=True, slots=True)
class _Origin:
    partition: str | None
    offset: str | None
    sequence_number: int | None
    enqueued_time: datetime | None


def _event_letter(event: IncomingEvent, reason: str, now: datetime) -> DeadLetter:
    return DeadLetter(
        payload=event.body.decode("utf-8", "backslashreplace"),
        reason=reason,
        source="event",
        occurred_at=event.enqueued_time or now,
        partition=event.partition,
        offset=event.offset,
        sequence_number=event.sequence_number,
    )


@contextmanager
def _timed(timings: dict[str, float], step: str) -> Iterator[None]:
    """Add the wall time of the block to `timings[step]` (ms; a rescored batch adds up)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[step] = timings.get(step, 0.0) + (time.perf_counter() - started) * 1000


class ScoringPipeline:
    """Decode → group by device → score in micro-batches → store → feed sinks."""

    def __init__(
        self,
        *,
        store: ScoreStore,
        batcher: MicroBatcher,
        states: StateCache | None = None,
        sinks: Sequence[PredictionSink] = (),
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.batcher = batcher
        self.states = states or StateCache(store, ttl=0.0)
        self.sinks = list(sinks)
        self.metrics = metrics

    def process(self, events: Sequence[IncomingEvent], *, now: datetime) -> BatchReport:
        """Process one trigger batch.

        Raises:
            TransientError, EndpointConfigError: the batch must be delivered again; nothing
                of it has been checkpointed and nothing written so far can duplicate.
        """
        report = BatchReport(events=len(events))
        enqueued = [e.enqueued_time for e in events if e.enqueued_time is not None]
        if enqueued:
            report.lag_ms = max(0.0, (now - max(enqueued)).total_seconds() * 1000)
        event_letters: list[DeadLetter] = []
        devices: dict[str, list[Reading]] = {}
        origins: dict[int, _Origin] = {}  # id(reading) -> the event it came in
        for event in events:
            try:
                device_id, readings = decode_event(event.body)
            except ValidationError as exc:
                event_letters.append(_event_letter(event, f"undecodable event: {exc}", now))
                continue
            origin = _Origin(
                event.partition, event.offset, event.sequence_number, event.enqueued_time
            )
            for reading in readings:
                origins[id(reading)] = origin
            devices.setdefault(device_id, []).extend(readings)
        for readings in devices.values():
            readings.sort(key=lambda r: r.timestamp)  # stable: repeated timestamps keep order
        report.devices = len(devices)
        report.readings = sum(len(r) for r in devices.values())

        timings = report.timings_ms
        predictions, letters, requests, conflicts = self._score_and_store(
            devices, origins, now, timings
        )
        if conflicts:
            # Another worker wrote these states since we cached them: nothing of theirs was
            # stored, so score them again from what is stored now (the cache forgot them).
            log.warning(
                "state of %d devices changed under this worker; scoring them again", len(conflicts)
            )
            more, more_letters, more_requests, still = self._score_and_store(
                {d: devices[d] for d in conflicts}, origins, now, timings
            )
            if still:
                raise ConflictError(f"state of {len(still)} devices changed twice during one batch")
            predictions += more
            letters += more_letters
            requests += more_requests
        if event_letters:
            self._dead_letter(event_letters)
        letters = event_letters + letters

        for sink in self.sinks:
            try:
                sink.offer(predictions)
            except Exception:  # a sink must never fail scoring; Table Storage is the record
                log.exception(
                    "sink %s failed; predictions are stored regardless", type(sink).__name__
                )

        report.requests = requests
        report.predictions = len(predictions)
        report.anomalies = sum(1 for p in predictions if p.is_anomaly)
        report.dead_letters = len(letters)
        report.reasons = [letter.reason for letter in letters]
        for letter in letters:
            sources = report.dead_letter_sources
            sources[letter.source] = sources.get(letter.source, 0) + 1
        if self.metrics is not None:
            self.metrics.record_batch(report)
        log.info(
            "scored %d readings of %d devices from %d events in %d requests: "
            "%d predictions, %d anomalies, %d dead letters (ms: %s)",
            report.readings,
            report.devices,
            report.events,
            report.requests,
            report.predictions,
            report.anomalies,
            report.dead_letters,
            " ".join(f"{k} {v:.0f}" for k, v in timings.items()),
            extra=batch_fields(report),
        )
        return report

    def _score_and_store(
        self,
        devices: dict[str, list[Reading]],
        origins: dict[int, _Origin],
        now: datetime,
        timings: dict[str, float],
    ) -> tuple[list[Prediction], list[DeadLetter], int, list[str]]:
        """Score and store; return predictions stored, dead letters, requests, conflicts."""
        with _timed(timings, "states_read"):
            snapshot = self.states.get_many(list(devices))
        with _timed(timings, "score"):
            outcome = self.batcher.score(devices, snapshot.states)
        letters: list[DeadLetter] = []
        for rejection in outcome.rejected:
            letters += self._letters(
                rejection.device_id, rejection.readings, rejection.reason, "model", origins, now
            )
        if letters:
            self._dead_letter(letters)
        with _timed(timings, "anomalies_write"):
            self._index_anomalies(outcome.results)
        with _timed(timings, "predictions_write"):
            written = self._store(outcome, snapshot.etags, now)
        self.states.forget(written.conflicts)
        if written.error is not None:
            raise written.error  # the batch comes again; what did land is remembered
        rejected = {id(r) for rejection in outcome.rejected for r in rejection.readings}
        refused: list[DeadLetter] = []
        for device_id, reason in written.refused.items():
            scored = [r for r in devices[device_id] if id(r) not in rejected]
            refused += self._letters(device_id, scored, reason, "store", origins, now)
        if refused:
            self._dead_letter(refused)
        predictions = [p for d in written.etags for p in outcome.results[d].predictions]
        return predictions, letters + refused, outcome.requests, written.conflicts

    def _store(self, outcome: ScoreOutcome, etags: dict[str, str | None], now: datetime) -> Written:
        """Write each device's predictions with its next state; remember the states stored."""
        if not outcome.results:
            return Written()
        writes = [
            DeviceWrite(device_id, result.predictions, result.state, etags.get(device_id))
            for device_id, result in outcome.results.items()
        ]
        written = self.store.write_devices(
            writes, model_version=outcome.model_version or "unknown", now=now
        )
        self.states.remember({d: outcome.results[d].state for d in written.etags}, written.etags)
        if written.refused:
            log.warning(
                "table service refused the rows of %d devices; dead-lettering their readings",
                len(written.refused),
            )
        return written

    def _index_anomalies(self, results: dict[str, DeviceResult]) -> None:
        """The Anomalies table is an index over Predictions: a refused row is logged, not fatal."""
        anomalies = [p for r in results.values() for p in r.predictions if p.is_anomaly]
        if not anomalies:
            return
        try:
            self.store.upsert_anomalies(anomalies)
        except PermanentError as exc:
            log.error(
                "anomaly index refused %d rows (predictions are stored): %s", len(anomalies), exc
            )

    def _dead_letter(self, letters: list[DeadLetter]) -> None:
        self.store.add_dead_letters(letters)
        for letter in letters:
            log.warning(
                "dead-lettered %s data (partition %s, seq %s, device %s): %s",
                letter.source,
                letter.partition,
                letter.sequence_number,
                letter.device_id,
                letter.reason[:300],
            )

    @staticmethod
    def _letters(
        device_id: str,
        readings: list[Reading],
        reason: str,
        source: str,
        origins: dict[int, _Origin],
        now: datetime,
    ) -> list[DeadLetter]:
        """One replayable schema-1 event per (origin event, device): stable across batch cuts."""
        by_origin: dict[_Origin, list[Reading]] = {}
        for reading in readings:
            by_origin.setdefault(origins[id(reading)], []).append(reading)
        out = []
        for origin, group in by_origin.items():
            payload = {
                "schema": 1,
                "device_id": device_id,
                "readings": [r.to_json() for r in group],
            }
            out.append(
                DeadLetter(
                    payload=json.dumps(payload, separators=(",", ":")),
                    reason=reason,
                    source=source,
                    occurred_at=origin.enqueued_time or now,
                    partition=origin.partition,
                    offset=origin.offset,
                    sequence_number=origin.sequence_number,
                    device_id=device_id,
                )
            )
        return out
