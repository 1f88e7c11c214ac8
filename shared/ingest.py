"""The ingest use case: validate a request's readings and publish one event per device."""

from __future__ import annotations

import logging
import math
import time
from datetime import datetime

from .errors import PermanentError, RequestError, TransientError, ValidationError
from .events import encode_device_events
from .publisher import EventPublisher
from .readings import group_by_device, parse_body
from .responses import JsonResponse, from_request_error, from_validation_error
from .telemetry import Metrics

__all__ = ["handle_ingest"]

log = logging.getLogger(__name__)


def handle_ingest(
    body: bytes,
    *,
    content_type: str | None,
    publisher: EventPublisher,
    now: datetime,
    metrics: Metrics | None = None,
) -> JsonResponse:
    """Validate the whole request, then publish; any invalid reading rejects all of it.

    Returns:
        202 `{"accepted": n, "events": k}`, 400 with every bad field, 413, 415, or 503 with
        `Retry-After` when Event Hubs cannot take the events (the device should resend).
    """
    result = _ingest(body, content_type, publisher, now)
    if metrics is not None:
        if result.status == 202:
            metrics.add("fleetscore.ingest.readings_accepted", result.body["accepted"])
        else:
            metrics.add("fleetscore.ingest.requests_rejected", 1, status=result.status)
    return result


def _ingest(
    body: bytes, content_type: str | None, publisher: EventPublisher, now: datetime
) -> JsonResponse:
    try:
        readings = parse_body(body, now=now, content_type=content_type)
    except RequestError as exc:
        return from_request_error(exc)
    except ValidationError as exc:
        log.info("ingest rejected: %d invalid fields, first %s", len(exc.details), exc.details[0])
        return from_validation_error(exc)

    groups = group_by_device(readings)
    events = encode_device_events(groups, ingested_at=now)
    started = time.perf_counter()
    try:
        publisher.publish(events)
    except TransientError as exc:
        retry = max(1, math.ceil(exc.retry_after or 5))
        log.warning("ingest could not publish %d events: %s", len(events), exc)
        return JsonResponse(
            503,
            {"error": "eventhubs_unavailable", "message": "Event Hubs cannot be reached; retry"},
            {"Retry-After": str(retry)},
        )
    except PermanentError as exc:
        log.error("Event Hubs refused %d events: %s", len(events), exc)
        return JsonResponse(
            503,
            {"error": "eventhubs_refused", "message": "Event Hubs refused the events; retry later"},
            {"Retry-After": "30"},
        )
    publish_ms = (time.perf_counter() - started) * 1000
    log.info(
        "ingest accepted %d readings from %d devices (publish %.0f ms)",
        len(readings),
        len(groups),
        publish_ms,
        extra={
            "fleetscore.readings": len(readings),
            "fleetscore.devices": len(groups),
            "fleetscore.events": len(events),
            "fleetscore.ms.publish": round(publish_ms, 1),
        },
    )
    return JsonResponse(202, {"accepted": len(readings), "events": len(events)})
