"""Build trigger inputs the way the Python worker does, through azure-functions' own converters."""

from __future__ import annotations

import json
from datetime import datetime
from types import SimpleNamespace

import azure.functions as func
from azure.functions import meta
from azure.functions.eventhub import EventHubTriggerConverter


def eventhub_batch(
    bodies: list[bytes],
    *,
    partition: str = "0",
    first_sequence: int = 100,
    enqueued: datetime,
    partition_keys: list[str | None] | None = None,
) -> list[func.EventHubEvent]:
    """A cardinality-many, dataType-binary batch with system properties and partition context."""
    keys = partition_keys or [None] * len(bodies)
    system = [
        {
            "SequenceNumber": first_sequence + i,
            "Offset": 4096 * (first_sequence + i),
            "PartitionKey": keys[i],
            "EnqueuedTimeUtc": enqueued.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        for i in range(len(bodies))
    ]
    metadata = {
        "SystemPropertiesArray": meta.Datum(json.dumps(system), "json"),
        "PartitionContext": meta.Datum(
            json.dumps(
                {"EventHubName": "readings", "ConsumerGroup": "$Default", "PartitionId": partition}
            ),
            "json",
        ),
    }
    data = meta.Datum(SimpleNamespace(bytes=list(bodies)), "collection_bytes")
    return EventHubTriggerConverter.decode(data, trigger_metadata=metadata)
