"""The scoring use case: a batch of events in, predictions stored, dead letters kept, sinks fed.

Write order is what makes redelivery harmless: predictions (idempotent upserts keyed by
reading), then dead letters (keyed by origin), and the device states last. If anything fails
before the states are written the invocation raises, the batch comes again, and it is scored
again from the same states into the same rows.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from .deadletters import DeadLetter
from .errors import ValidationError
from .events import IncomingEvent, decode_event
from .microbatch import MicroBatcher
from .predictions import Prediction
from .readings import Reading
from .states import StateCache, StateStore

__all__ = ["BatchReport", "PredictionSink", "ScoreStore", "ScoringPipeline"]

log = logging.getLogger(__name__)


class ScoreStore(StateStore, Protocol):
    """The writes the pipeline needs from the table store."""

    def upsert_predictions(self, predictions: Sequence[Prediction]) -> None:
        """Store predictions idempotently."""
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


class ScoringPipeline:
    """Decode → group by device → score in micro-batches → store → feed sinks."""

    def __init__(
        self,
        *,
        store: ScoreStore,
        batcher: MicroBatcher,
        states: StateCache | None = None,
        sinks: Sequence[PredictionSink] = (),
    ) -> None:
        self.store = store
        self.batcher = batcher
        self.states = states or StateCache(store, ttl=0.0)
        self.sinks = list(sinks)

    def process(self, events: Sequence[IncomingEvent], *, now: datetime) -> BatchReport:
        """Process one trigger batch.

        Raises:
            TransientError, EndpointConfigError: the batch must be delivered again; nothing
                of it has been checkpointed and nothing written so far can duplicate.
        """
        report = BatchReport(events=len(events))
        letters: list[DeadLetter] = []
        devices: dict[str, list[Reading]] = {}
        origins: dict[str, _Origin] = {}
        for event in events:
            try:
                device_id, readings = decode_event(event.body)
            except ValidationError as exc:
                letters.append(_event_letter(event, f"undecodable event: {exc}", now))
                continue
            devices.setdefault(device_id, []).extend(readings)
            origins.setdefault(
                device_id,
                _Origin(event.partition, event.offset, event.sequence_number, event.enqueued_time),
            )
        for readings in devices.values():
            readings.sort(key=lambda r: r.timestamp)  # stable: repeated timestamps keep order
        report.devices = len(devices)
        report.readings = sum(len(r) for r in devices.values())

        states = self.states.get_many(list(devices))
        outcome = self.batcher.score(devices, states)
        report.requests = outcome.requests

        predictions = [p for result in outcome.results.values() for p in result.predictions]
        anomalies = [p for p in predictions if p.is_anomaly]
        for rejection in outcome.rejected:
            origin = origins[rejection.device_id]
            payload = {
                "schema": 1,
                "device_id": rejection.device_id,
                "readings": [r.to_json() for r in rejection.readings],
            }
            letters.append(
                DeadLetter(
                    payload=json.dumps(payload, separators=(",", ":")),
                    reason=rejection.reason,
                    source="model",
                    occurred_at=origin.enqueued_time or now,
                    partition=origin.partition,
                    offset=origin.offset,
                    sequence_number=origin.sequence_number,
                    device_id=rejection.device_id,
                )
            )

        if predictions:
            self.store.upsert_predictions(predictions)
        if anomalies:
            self.store.upsert_anomalies(anomalies)
        if letters:
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
        if outcome.results:
            self.states.put_many(
                {d: r.state for d, r in outcome.results.items()},
                model_version=outcome.model_version or "unknown",
                now=now,
            )

        for sink in self.sinks:
            try:
                sink.offer(predictions)
            except Exception:  # a sink must never fail scoring; Table Storage is the record
                log.exception(
                    "sink %s failed; predictions are stored regardless", type(sink).__name__
                )

        report.predictions = len(predictions)
        report.anomalies = len(anomalies)
        report.dead_letters = len(letters)
        report.reasons = [letter.reason for letter in letters]
        log.info(
            "scored %d readings of %d devices from %d events in %d requests: "
            "%d predictions, %d anomalies, %d dead letters",
            report.readings,
            report.devices,
            report.events,
            report.requests,
            report.predictions,
            report.anomalies,
            report.dead_letters,
        )
        return report
