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
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import FleetscoreError
from .events import OutgoingEvent, split_to_fit
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

        def encode(part: Sequence[dict[str, object]], device_id: str = device_id) -> bytes:
            doc = {"schema": RESULTS_SCHEMA_VERSION, "device_id": device_id, "predictions": part}
            return json.dumps(doc, separators=(",", ":")).encode()

        for body, count in split_to_fit(rows, encode, _MAX_EVENT_BYTES):
            events.append(
                OutgoingEvent(device_id, body, {"schema": RESULTS_SCHEMA_VERSION, "count": count})
            )
    return events


class ResultsSink:
    """Publishes predictions through an `EventPublisher` from a background thread.

    `offer` only queues (bounded, so a hub that is down cannot grow memory without limit) and
    never blocks scoring; `pump` publishes what is queued, and the thread calls it.
    """

    def __init__(self, publisher: EventPublisher, *, max_queued: int = 100_000) -> None:
        self._publisher = publisher
        self._max = max_queued
        self._queue: deque[Prediction] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False
        self.stats = ResultsStats()

    def offer(self, predictions: Sequence[Prediction]) -> None:
        """Queue the predictions; past the cap they are counted as dropped."""
        if not predictions:
            return
        with self._cond:
            room = self._max - len(self._queue)
            taken = list(predictions[: max(room, 0)])
            self._queue.extend(taken)
            dropped = len(predictions) - len(taken)
            self._cond.notify()
        if dropped:
            self.stats.predictions_dropped += dropped
            log.warning("results hub queue full: %d predictions dropped", dropped)

    def pump(self) -> int:
        """Publish everything queued now; return how many were sent."""
        with self._cond:
            batch = list(self._queue)
            self._queue.clear()
        if not batch:
            return 0
        try:
            self._publisher.publish(encode_result_events(batch))
        except FleetscoreError as exc:
            self.stats.failures += 1
            self.stats.predictions_dropped += len(batch)
            log.warning(
                "results hub: %d predictions not published (%s); %d dropped so far",
                len(batch),
                exc,
                self.stats.predictions_dropped,
            )
            return 0
        self.stats.predictions_sent += len(batch)
        return len(batch)

    def start(self) -> None:
        """Publish from a daemon thread until `close`."""
        self._thread = threading.Thread(target=self._run, name="results-sink", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if self._closing and not self._queue:
                    return
            self.pump()

    def close(self, timeout: float = 10.0) -> None:
        """Publish what is queued (up to `timeout`), stop the thread, close the producer."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        else:
            self.pump()
        self._publisher.close()
