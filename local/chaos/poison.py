"""Poison on the hub: events the ingest would never publish, sent straight to a partition.

Other producers may share a hub, so the score function must survive whatever arrives: a body
that is not JSON, a schema it does not know, a device the model refuses (the fault proxy answers
400 for it, as a scoring script does for input it cannot take), and a huge event near Event
Hubs' 1 MB limit. Each must become a dead letter with its reason while the valid events around
it, in the same partition and usually the same trigger batch, are scored and stored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.eventhub import EventData, EventHubProducerClient

from shared.readings import parse_timestamp, row_key

__all__ = ["OWN_DEVICES", "REJECTED_DEVICES", "PoisonSent", "poison_verdict", "send_poison"]

OWN_DEVICES = "chaos-"  # every device id this module sends starts with this
REJECTED_DEVICES = "chaos-reject-"  # the fault proxy answers 400 for these
_HUGE_BYTES = 900 * 1024

# What each poison's dead-letter reason must say (a case-insensitive substring).
EXPECTED_REASONS = {
    "not JSON": "not JSON",
    "wrong schema version": "unsupported schema",
    "model rejects the reading": "refused",
    "huge event": "metrics",
}


@dataclass(frozen=True)
class PoisonSent:
    """What went onto the hub: the poison by kind, and the valid neighbours' readings."""

    partition: str
    kinds: tuple[str, ...]
    neighbours: frozenset[tuple[str, str]]  # (device_id, Predictions RowKey)
    sent_at: datetime


def _reading(at: datetime, value: Any = 1.0) -> dict[str, Any]:
    return {"timestamp": at.isoformat().replace("+00:00", "Z"), "metrics": {"temperature": value}}


def _event(device_id: str, readings: list[dict[str, Any]], schema: int = 1) -> bytes:
    doc = {"schema": schema, "device_id": device_id, "readings": readings}
    return json.dumps(doc, separators=(",", ":")).encode()


def send_poison(connection_string: str, hub: str, *, partition: str = "0") -> PoisonSent:
    """Send valid, poison, valid to one partition; return what was sent."""
    now = datetime.now(UTC).replace(microsecond=0)
    stamps = [now - timedelta(seconds=30 - i) for i in range(3)]
    neighbours = {
        f"{OWN_DEVICES}ok-{n}": [_reading(t, 20.0 + i) for i, t in enumerate(stamps)]
        for n in (1, 2)
    }
    poison = {
        "not JSON": b"\x00\xff{this is not json",
        "wrong schema version": _event(f"{OWN_DEVICES}schema", [_reading(now)], schema=2),
        "model rejects the reading": _event(f"{REJECTED_DEVICES}1", [_reading(t) for t in stamps]),
        "huge event": _event(f"{OWN_DEVICES}huge", [_reading(now, "x" * _HUGE_BYTES)]),
    }
    first, last = (_event(d, r) for d, r in neighbours.items())
    producer = EventHubProducerClient.from_connection_string(connection_string, eventhub_name=hub)
    with producer:
        small = [first, *(body for kind, body in poison.items() if kind != "huge event")]
        producer.send_batch([EventData(body) for body in small], partition_id=partition)
        producer.send_batch([EventData(poison["huge event"])], partition_id=partition)
        producer.send_batch([EventData(last)], partition_id=partition)
    return PoisonSent(
        partition=partition,
        kinds=tuple(poison),
        neighbours=frozenset(
            (device, row_key(parse_timestamp(r["timestamp"])))
            for device, rs in neighbours.items()
            for r in rs
        ),
        sent_at=now,
    )


def poison_verdict(
    sent: PoisonSent,
    letters: list[Mapping[str, Any]],
    stored: set[tuple[str, str]],
) -> dict[str, Any]:
    """Which poison has its dead letter, and whether every neighbour reading was stored.

    `letters` are DeadLetters items (as `fleetscore deadletters list` gives them); `stored` is
    (PartitionKey, RowKey) of the Predictions rows. A row of the run's own devices other than
    the neighbours' (`strays`) means poison was scored and stored: a broken promise too.
    """
    found: dict[str, str | None] = {}
    for kind in sent.kinds:
        want = EXPECTED_REASONS[kind].lower()
        match = next(
            (
                str(letter.get("reason", ""))
                for letter in letters
                if want in str(letter.get("reason", "")).lower()
                and _is_kind(kind, letter, sent.partition)
            ),
            None,
        )
        found[kind] = match
    neighbours_stored = len(sent.neighbours & stored)
    strays = sorted(f"{d}/{k}" for d, k in stored - sent.neighbours if d.startswith(OWN_DEVICES))
    return {
        "dead_lettered": {kind: reason is not None for kind, reason in found.items()},
        "reasons": {kind: (reason or "")[:160] for kind, reason in found.items()},
        "neighbours": len(sent.neighbours),
        "neighbours_stored": neighbours_stored,
        "strays": strays,
        "ok": all(r is not None for r in found.values())
        and neighbours_stored == len(sent.neighbours)
        and not strays,
    }


def _is_kind(kind: str, letter: Mapping[str, Any], partition: str) -> bool:
    """Tie a letter to the poison that made it: its partition, and its device or payload."""
    if str(letter.get("partition")) != partition:
        return False
    device = str(letter.get("device_id") or "")
    payload = str(letter.get("payload") or "")
    if kind == "model rejects the reading":
        return device.startswith(REJECTED_DEVICES) and letter.get("source") == "model"
    if kind == "huge event":
        return bool(letter.get("payload_truncated")) or f'"{OWN_DEVICES}huge"' in payload
    if kind == "wrong schema version":
        return f'"{OWN_DEVICES}schema"' in payload
    return letter.get("source") == "event" and payload.startswith("\x00")
