"""The Event contract: one event per device per ingest request, decoded again by the scorer.

Body `{"schema": 1, "device_id": ..., "readings": [{"timestamp": ..., "metrics": {...}}]}`,
partition key = device_id, application properties `schema`, `count`, `ingested_at`. Few, fat
events: the SDK spends its time per event, not per byte, so grouping pays.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from .errors import FieldError, ValidationError
from .readings import Reading, format_timestamp, is_valid_device_id, validate_reading

__all__ = [
    "MAX_EVENT_BODY_BYTES",
    "SCHEMA_VERSION",
    "IncomingEvent",
    "OutgoingEvent",
    "decode_event",
    "encode_device_events",
    "split_to_fit",
]

SCHEMA_VERSION = 1
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class OutgoingEvent:
    """An event ready for a producer: body bytes, partition key and application properties."""

    partition_key: str
    body: bytes
    properties: dict[str, str | int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class IncomingEvent:
    """An event as the trigger hands it over, with the coordinates a dead letter needs."""

    body: bytes
    partition: str | None = None
    offset: str | None = None
    sequence_number: int | None = None
    enqueued_time: datetime | None = None


# Leaves room under the 1 MiB message limit for AMQP framing and properties.
MAX_EVENT_BODY_BYTES = 960 * 1024


def _encode_body(device_id: str, readings: Sequence[Reading]) -> bytes:
    body = {
        "schema": SCHEMA_VERSION,
        "device_id": device_id,
        "readings": [r.to_json() for r in readings],
    }
    return json.dumps(body, separators=(",", ":")).encode()


def split_to_fit(
    items: Sequence[T], encode: Callable[[Sequence[T]], bytes], limit: int
) -> list[tuple[bytes, int]]:
    """Encode `items` as one body, or halve them, in order, until each body fits `limit`.

    Returns (body, item count) pairs; a single item too large on its own is returned as is so
    the caller's size check (the SDK's batch, the hub) refuses it with a clear error.
    """
    body = encode(items)
    if len(body) <= limit or len(items) == 1:
        return [(body, len(items))]
    half = len(items) // 2
    return split_to_fit(items[:half], encode, limit) + split_to_fit(items[half:], encode, limit)


def encode_device_events(
    groups: Mapping[str, Sequence[Reading]],
    *,
    ingested_at: datetime,
    max_body_bytes: int = MAX_EVENT_BODY_BYTES,
) -> list[OutgoingEvent]:
    """Encode one event per device, in the order the groups are given.

    A device whose readings would not fit one message is split over consecutive events,
    in order, under the same partition key.
    """
    stamp = format_timestamp(ingested_at)
    events = []
    for device_id, readings in groups.items():
        for body, count in split_to_fit(
            readings, lambda rs, d=device_id: _encode_body(d, rs), max_body_bytes
        ):
            events.append(
                OutgoingEvent(
                    partition_key=device_id,
                    body=body,
                    properties={"schema": SCHEMA_VERSION, "count": count, "ingested_at": stamp},
                )
            )
    return events


def decode_event(body: bytes) -> tuple[str, list[Reading]]:
    """Decode and re-validate an event body (other producers may share the hub).

    The time window is not checked here: a redelivered event may be days old by now.

    Raises:
        ValidationError: naming the field, when the body is not a schema-1 event.
    """
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ValidationError.single("body", f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValidationError.single("body", "must be a JSON object")
    if doc.get("schema") != SCHEMA_VERSION:
        raise ValidationError.single(
            "schema", f"unsupported schema {doc.get('schema')!r}; expected 1"
        )
    device_id = doc.get("device_id")
    if not is_valid_device_id(device_id):
        raise ValidationError.single("device_id", "missing or not a valid device id")
    assert isinstance(device_id, str)
    items = doc.get("readings")
    if not isinstance(items, list) or not items:
        raise ValidationError.single("readings", "must be a non-empty array")
    readings: list[Reading] = []
    errors: list[FieldError] = []
    for i, item in enumerate(items):
        candidate = {**item, "device_id": device_id} if isinstance(item, dict) else item
        reading, problems = validate_reading(candidate, index=i)
        errors.extend(problems)
        if reading is not None:
            readings.append(reading)
    if errors:
        raise ValidationError(errors)
    return device_id, readings
