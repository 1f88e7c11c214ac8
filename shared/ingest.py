"""The ingest use case: validate a request's readings and publish one event per device."""

from __future__ import annotations

import logging
import math
from datetime import datetime

from .errors import PermanentError, RequestError, TransientError, ValidationError
from .events import encode_device_events
from .publisher import EventPublisher
from .readings import group_by_device, parse_body
from .responses import JsonResponse, from_request_error, from_validation_error

__all__ = ["handle_ingest"]

log = logging.getLogger(__name__)


def handle_ingest(
    body: bytes,
    *,
    content_type: str | None,
    publisher: EventPublisher,
    now: datetime,
) -> JsonResponse:
    """Validate the whole request, then publish; any invalid reading rejects all of it.

    Returns:
        202 `{"accepted": n, "events": k}`, 400 with every bad field, 413, 415, or 503 with
        `Retry-After` when Event Hubs cannot take the events (the device should resend).
    """
    try:
        readings = parse_body(body, now=now, content_type=content_type)
    except RequestError as exc:
        return from_request_error(exc)
    except ValidationError as exc:
        log.info("ingest rejected: %d invalid fields, first %s", len(exc.details), exc.details[0])
        return from_validation_error(exc)

    groups = group_by_device(readings)
    events = encode_device_events(groups, ingested_at=now)
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
    log.info("ingest accepted %d readings from %d devices", len(readings), len(groups))
    return JsonResponse(202, {"accepted": len(readings), "events": len(events)})
