"""The results sink: each batch's predictions to a second Event Hub, for Fabric Eventstream.

Power BI real-time streaming retires on 31 October 2027 in favour of Fabric Real-Time
Intelligence, whose Eventstream reads an Event Hubs-compatible endpoint. Events are grouped
per device like the readings hub (partition key = device_id), with the same producer code.
Table Storage stays the system of record, so a failed publish is logged and counted, never
raised into scoring.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import FleetscoreError
from .events import OutgoingEvent
from .predictions import Prediction
from .publisher import EventPublisher

__all__ = ["RESULTS_SCHEMA_VERSION", "ResultsSink", "ResultsStats"]

log = logging.getLogger(__name__)

RESULTS_SCHEMA_VERSION = 1
# Keep each event well under the 1 MiB message limit.
_MAX_EVENT_BYTES = 256 * 1024


@dataclass(slots=True)
class ResultsStats:
    """Counters a test or an operator can read."""

    predictions_sent: int = 0
    predictions_dropped: int = 0
    failures: int = 0


def encode_result_events(predictions: Sequence[Prediction]) -> list[OutgoingEvent]:
    """One event per device, split when large: `{"schema": 1, "device_id", "predictions"}`."""
    by_device: dict[str, list[dict[str, object]]] = {}
    for p in predictions:
        by_device.setdefault(p.device_id, []).append(p.to_json())
    events: list[OutgoingEvent] = []
    for device_id, rows in by_device.items():
        start = 0
        while start < len(rows):
            end = len(rows)
            while True:
                body = json.dumps(
                    {
                        "schema": RESULTS_SCHEMA_VERSION,
                        "device_id": device_id,
                        "predictions": rows[start:end],
                    },
                    separators=(",", ":"),
                ).encode()
                if len(body) <= _MAX_EVENT_BYTES or end - start == 1:
                    break
                end = start + (end - start) // 2
            events.append(
                OutgoingEvent(
                    device_id, body, {"schema": RESULTS_SCHEMA_VERSION, "count": end - start}
                )
            )
            start = end
    return events


class ResultsSink:
    """Publishes predictions through an `EventPublisher`; never raises into the caller."""

    def __init__(self, publisher: EventPublisher) -> None:
        self._publisher = publisher
        self.stats = ResultsStats()

    def offer(self, predictions: Sequence[Prediction]) -> None:
        """Publish now; on failure count the predictions as dropped and log a warning."""
        if not predictions:
            return
        try:
            self._publisher.publish(encode_result_events(predictions))
        except FleetscoreError as exc:
            self.stats.failures += 1
            self.stats.predictions_dropped += len(predictions)
            log.warning(
                "results hub: %d predictions not published (%s); %d dropped so far",
                len(predictions),
                exc,
                self.stats.predictions_dropped,
            )
            return
        self.stats.predictions_sent += len(predictions)

    def close(self) -> None:
        """Close the producer."""
        self._publisher.close()
