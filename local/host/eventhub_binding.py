"""SDK `EventData` -> the `azure.functions.EventHubEvent`s a Python function receives.

The host hands the Python worker a batch as a collection of bodies plus trigger metadata
(`SystemPropertiesArray`, `PartitionContext`, ...), and the worker builds the events with
azure-functions' own `EventHubTriggerConverter`. This module produces the same metadata and
calls the same converter, so `event.sequence_number`, `.offset`, `.enqueued_time`,
`.partition_key` and `events[0].metadata` look as they do on Azure. Metadata names follow the
Event Hubs extension's binding contract: `<Name>Array` for cardinality many, `<Name>` for one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import azure.functions as func
from azure.eventhub import EventData
from azure.functions import meta
from azure.functions.eventhub import EventHubTriggerConverter

__all__ = ["PartitionInfo", "event_body", "to_function_events"]


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    """Where a batch came from: the trigger's `PartitionContext`."""

    namespace: str
    eventhub_name: str
    consumer_group: str
    partition_id: str

    def as_metadata(self) -> dict[str, str]:
        """The JSON shape of the extension's partition context."""
        return {
            "FullyQualifiedNamespace": self.namespace,
            "EventHubName": self.eventhub_name,
            "ConsumerGroup": self.consumer_group,
            "PartitionId": self.partition_id,
        }


def event_body(event: EventData) -> bytes:
    """The body bytes; a data body may arrive in several sections."""
    try:
        return b"".join(event.body)
    except TypeError:  # an AMQP value or sequence body: hand over its text form
        return event.body_as_str().encode("utf-8")


def _plain(value: Any) -> Any:
    """A property value as JSON can carry it (AMQP strings arrive as bytes)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, datetime):
        return _timestamp(value)
    if isinstance(value, Mapping):
        return {str(_plain(k)): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _timestamp(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _offset(event: EventData) -> int | str | None:
    offset = event.offset
    return int(offset) if isinstance(offset, str) and offset.isdigit() else offset


def _system_properties(event: EventData) -> dict[str, Any]:
    props = _plain(event.system_properties or {})
    key = event.partition_key
    props.update(
        {
            "SequenceNumber": event.sequence_number,
            "Offset": _offset(event),
            "PartitionKey": key.decode("utf-8", "replace") if isinstance(key, bytes) else key,
            "EnqueuedTimeUtc": _timestamp(event.enqueued_time) if event.enqueued_time else None,
        }
    )
    return props


def _json(value: Any) -> meta.Datum:
    return meta.Datum(json.dumps(value), "json")


def to_function_events(
    events: Sequence[EventData], partition: PartitionInfo, *, many: bool = True
) -> list[func.EventHubEvent] | func.EventHubEvent:
    """Convert like the worker does: a list for cardinality many, one event otherwise.

    Raises:
        ValueError: `many` is False and `events` does not hold exactly one event.
    """
    system = [_system_properties(e) for e in events]
    properties = [_plain(e.properties or {}) for e in events]
    context = _json(partition.as_metadata())
    if many:
        metadata = {
            "PartitionContext": context,
            "TriggerPartitionContext": context,
            "SystemPropertiesArray": _json(system),
            "PropertiesArray": _json(properties),
            "PartitionKeyArray": _json([s["PartitionKey"] for s in system]),
            "OffsetArray": _json([s["Offset"] for s in system]),
            "SequenceNumberArray": _json([s["SequenceNumber"] for s in system]),
            "EnqueuedTimeUtcArray": _json([s["EnqueuedTimeUtc"] for s in system]),
        }
        data = meta.Datum(
            SimpleNamespace(bytes=[event_body(e) for e in events]), "collection_bytes"
        )
        return EventHubTriggerConverter.decode(data, trigger_metadata=metadata)
    if len(events) != 1:
        raise ValueError(f"cardinality one takes exactly one event, got {len(events)}")
    (sys_props,) = system
    metadata = {
        "PartitionContext": context,
        "TriggerPartitionContext": context,
        "SystemProperties": _json(sys_props),
        "Properties": _json(properties[0]),
        "SequenceNumber": meta.Datum(sys_props["SequenceNumber"], "int"),
        "EnqueuedTimeUtc": meta.Datum(sys_props["EnqueuedTimeUtc"], "string"),
    }
    if sys_props["Offset"] is not None:
        metadata["Offset"] = meta.Datum(str(sys_props["Offset"]), "string")
    if sys_props["PartitionKey"] is not None:
        metadata["PartitionKey"] = meta.Datum(sys_props["PartitionKey"], "string")
    return EventHubTriggerConverter.decode(
        meta.Datum(event_body(events[0]), "bytes"), trigger_metadata=metadata
    )
