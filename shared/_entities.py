"""The Table entity layout: how predictions, states and dead letters become entities.

Size rules: a string property holds at most 32K UTF-16 code units and an entity at most 1 MiB
(strings count two bytes per code unit). Long text is therefore split over `<name>_0..<name>_n`
properties of at most 32,000 units. A device state that cannot fit in ~900 KB raises
`PermanentError` (a truncated state would be silently wrong); a dead-letter payload that
cannot fit is truncated, marked `payload_truncated`, and kept with its size and SHA-256.

Integers outside int32 are stored as Edm.Int64 and those outside int64 as doubles, so they read
back as `int` (or, beyond 2**63, as the nearest `float`). None values are not stored: an extra
field that was None is absent when read back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
from azure.data.tables import EdmType

from .deadletters import DeadLetter
from .errors import PermanentError
from .predictions import CORE_FIELDS, Prediction
from .readings import format_timestamp, row_key

log = logging.getLogger(__name__)

Entity = dict[str, Any]

# Service limits (Azure Table Storage documentation) and the margins kept below them.
_MAX_BATCH_OPS = 100
_MAX_BATCH_BYTES = 4_000_000  # 4 MiB is 4,194,304; the rest covers the multipart envelope
_MAX_ENTITY_BYTES = 1024 * 1024
_ENTITY_BUDGET = 900_000  # what we plan for, so our size formula may err a little
_MAX_STRING_UNITS = 32 * 1024
_CHUNK_UNITS = 32_000
_MAX_PROPERTIES = 252  # custom properties, besides PartitionKey, RowKey and Timestamp
_MAX_KEY_UNITS = 512  # 1 KiB of UTF-16
_INT32 = range(-(2**31), 2**31)
_INT64 = range(-(2**63), 2**63)
_REASON_UNITS = 8_000  # reasons are messages, not data: cut them rather than chunk them

_KEY_FORBIDDEN = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")
_PROPERTY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
_PREFIX = re.compile(r"(?:[A-Za-z][A-Za-z0-9]{0,39})?")
_ROW_KEY = re.compile(r"\d{8}T\d{6}\.\d{3}Z")
# Stored properties that are not extras: the keys, the contract fields, and what the pipeline adds.
_CORE = frozenset({"PartitionKey", "RowKey", *CORE_FIELDS, "model_version", "metrics", "device_id"})


def _units(text: str) -> int:
    """UTF-16 code units: what the service counts for string limits."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _split_utf16(text: str, units: int) -> list[str]:
    """Split `text` into pieces of at most `units` UTF-16 units, never inside a surrogate pair."""
    data = text.encode("utf-16-le", "surrogatepass")
    pieces: list[str] = []
    i = 0
    while i < len(data):
        j = min(i + 2 * units, len(data))
        if j < len(data) and 0xD8 <= data[j - 1] <= 0xDB:  # a high surrogate ends the piece
            j -= 2
        pieces.append(data[i:j].decode("utf-16-le", "surrogatepass"))
        i = j
    return pieces


def _json(value: object) -> str:
    """Compact JSON that keeps non-ASCII characters as they are.

    An escape costs 6 UTF-16 units where the character costs 1 or 2. A lone surrogate can only
    travel escaped, so such a value falls back to ASCII JSON.
    """
    try:
        # orjson writes what json.dumps(ensure_ascii=False) does, ~10x faster, and refuses a
        # lone surrogate (and keys that are not strings): the json module takes those.
        return orjson.dumps(value).decode()
    except TypeError:
        pass
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, separators=(",", ":"))
    return text


def _text_properties(name: str, text: str) -> Entity:
    """`{name: text}`, or `{name_0: ..., name_n: ...}` when over one property's limit."""
    pieces = _split_utf16(text, _CHUNK_UNITS)
    if len(pieces) <= 1:
        return {name: text}
    return {f"{name}_{i}": piece for i, piece in enumerate(pieces)}


def _join_text(entity: Mapping[str, Any], name: str) -> str | None:
    if name in entity:
        return str(entity[name])
    pieces: list[str] = []
    while (piece := entity.get(f"{name}_{len(pieces)}")) is not None:
        pieces.append(str(piece))
    return "".join(pieces) if pieces else None


def _value(value: object) -> Any:
    """A Python scalar as the SDK must be given it (ints beyond int32 need an explicit type)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return value
    if value in _INT32:
        return value
    if value in _INT64:
        return (value, EdmType.INT64)
    return float(value)


def _plain(value: Any) -> Any:
    """Undo `_value`: typed values come back as `EntityProperty(value, edm_type)` tuples."""
    return value[0] if isinstance(value, tuple) else value


def _value_size(value: Any) -> int:
    value = _plain(value)
    if isinstance(value, str):
        return 4 + 2 * _units(value)
    if isinstance(value, bool):
        return 1
    if isinstance(value, int) and value in _INT32:
        return 4
    return 8


def _entity_size(entity: Mapping[str, Any]) -> int:
    """The service's documented size formula: 4 + keys + per property 8 + name + value."""
    size = 4 + 2 * _units(entity["PartitionKey"]) + 2 * _units(entity["RowKey"])
    for name, value in entity.items():
        if name not in ("PartitionKey", "RowKey") and value is not None:
            size += 8 + 2 * len(name) + _value_size(value)
    return size


def _wire_size(entity: Mapping[str, Any]) -> int:
    """A generous estimate of an entity's share of a transaction body.

    JSON with every non-ASCII character escaped (the worst case), an `@odata.type` annotation
    per property, and the operation's own request line and headers with escaped keys.
    """
    text = orjson.dumps(entity, default=str)  # typed values: [value, "Edm.Int64"]
    # As json.dumps writes it: a space after each colon and comma, and ASCII escapes (the
    # worst case), which only matter where there is anything to escape.
    body = len(text) + 2 * len(entity) if text.isascii() else len(json.dumps(entity, default=str))
    annotations = sum(len(name) + 32 for name in entity)
    keys = 3 * (len(entity["PartitionKey"]) + len(entity["RowKey"]))
    return body + annotations + keys + 600


def _check_key(value: object, what: str) -> None:
    """Reject keys the service refuses (and `/`, which Azurite answers with a 500)."""
    if not isinstance(value, str):
        raise PermanentError(f"{what} must be a string", status=400)
    if _units(value) > _MAX_KEY_UNITS:
        raise PermanentError(f"{what} is over 1 KiB", status=400)
    if _KEY_FORBIDDEN.search(value):
        raise PermanentError(f"{what} holds / \\ # ? or a control character", status=400)


def _prediction_entity(p: Prediction, partition_key: str, key: str) -> Entity:
    entity: Entity = {
        "PartitionKey": partition_key,
        "RowKey": key,
        "timestamp": format_timestamp(p.timestamp),
        "anomaly_score": float(p.anomaly_score),
        "is_anomaly": bool(p.is_anomaly),
        "model_version": p.model_version,
        "metrics": _json(p.metrics),
    }
    if p.top_metric is not None:
        entity["top_metric"] = p.top_metric
    if p.failure_probability is not None:
        entity["failure_probability"] = float(p.failure_probability)
    if p.maintenance_due is not None:
        entity["maintenance_due"] = bool(p.maintenance_due)
    for name, value in p.extra.items():
        if name in _CORE:
            raise PermanentError(f"extra field {name!r} collides with a stored property")
        if value is not None:
            entity[name] = _value(value)
    return entity


def _prediction_json(entity: Mapping[str, Any], device_id: str) -> dict[str, Any]:
    probability = entity.get("failure_probability")
    out: dict[str, Any] = {
        "device_id": device_id,
        "timestamp": entity["timestamp"],
        "anomaly_score": float(_plain(entity["anomaly_score"])),
        "is_anomaly": bool(entity["is_anomaly"]),
        "top_metric": entity.get("top_metric"),
        "failure_probability": None if probability is None else float(_plain(probability)),
        "maintenance_due": entity.get("maintenance_due"),
        "model_version": entity["model_version"],
        "metrics": json.loads(entity["metrics"]),
    }
    for name, value in entity.items():
        if name not in _CORE:
            out[name] = _plain(value)
    return out


def _anomaly_key(p: Prediction) -> tuple[str, str]:
    return p.timestamp.astimezone(UTC).strftime("%Y%m%d"), f"{row_key(p.timestamp)}_{p.device_id}"


def _state_entity(
    device_id: str, state: Mapping[str, Any], model_version: str, now: datetime
) -> Entity:
    entity: Entity = {
        "PartitionKey": device_id,
        "RowKey": "state",
        **_text_properties("state", _json(state)),
        "model_version": model_version,
        "updated_at": format_timestamp(now),
    }
    if _entity_size(entity) > _ENTITY_BUDGET:
        raise PermanentError(
            f"state of device {device_id!r} is {_entity_size(entity)} bytes as stored;"
            f" at most {_ENTITY_BUDGET} fit in one entity"
        )
    return entity


def _letter_entity(letter: DeadLetter) -> Entity:
    head: Entity = {
        "PartitionKey": letter.partition_key,
        "RowKey": letter.row_key,
        "reason": _split_utf16(letter.reason, _REASON_UNITS)[0] if letter.reason else "",
        "source": _split_utf16(letter.source, 1_000)[0] if letter.source else "",
        "occurred_at": format_timestamp(letter.occurred_at),
    }
    for name in ("partition", "offset", "sequence_number", "device_id"):
        value = getattr(letter, name)
        if value is not None:
            head[name] = _value(value)
    entity = {**head, **_text_properties("payload", letter.payload)}
    if _entity_size(entity) <= _ENTITY_BUDGET:
        return entity
    raw = letter.payload.encode("utf-8", "surrogatepass")
    head |= {
        "payload_truncated": True,
        "payload_bytes": _value(len(raw)),
        "payload_sha256": hashlib.sha256(raw).hexdigest(),
    }
    pieces = _split_utf16(letter.payload, _CHUNK_UNITS)
    room = _ENTITY_BUDGET - _entity_size({**head, "payload_0": ""})
    kept: list[str] = []
    for i, piece in enumerate(pieces):
        cost = 8 + 2 * len(f"payload_{i}") + 4 + 2 * _units(piece)
        if cost > room:
            break
        kept.append(piece)
        room -= cost
    log.warning(
        "dead letter %s (source=%s device=%s partition=%s offset=%s) has a %d-byte payload;"
        " stored the first %d of %d pieces and marked it truncated",
        letter.row_key,
        letter.source,
        letter.device_id,
        letter.partition,
        letter.offset,
        len(raw),
        len(kept),
        len(pieces),
    )
    return {**head, **{f"payload_{i}": piece for i, piece in enumerate(kept or [""])}}


def _letter_json(entity: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": entity["RowKey"],
        "payload": _join_text(entity, "payload") or "",
        "reason": entity.get("reason", ""),
        "source": entity.get("source", ""),
        "occurred_at": entity.get("occurred_at"),
        "partition": entity.get("partition"),
        "offset": entity.get("offset"),
        "sequence_number": _plain(entity.get("sequence_number")),
        "device_id": entity.get("device_id"),
        "payload_truncated": bool(entity.get("payload_truncated", False)),
        "payload_bytes": _plain(entity.get("payload_bytes")),
        "payload_sha256": entity.get("payload_sha256"),
    }


def _plan(entities: Iterable[Entity]) -> list[list[Entity]]:
    """Group into transactions: one PartitionKey, unique RowKeys, ≤100 ops, ≤4 MB each.

    A RowKey seen twice keeps its last entity: the service refuses duplicates in one
    transaction, and the last write is the one an upsert sequence would leave anyway.
    """
    partitions: dict[str, dict[str, Entity]] = {}
    for entity in entities:
        rows = partitions.setdefault(entity["PartitionKey"], {})
        rows.pop(entity["RowKey"], None)
        rows[entity["RowKey"]] = entity
    batches: list[list[Entity]] = []
    for rows in partitions.values():
        batch: list[Entity] = []
        size = 0
        for entity in rows.values():
            cost = _wire_size(entity)
            if batch and (len(batch) == _MAX_BATCH_OPS or size + cost > _MAX_BATCH_BYTES):
                batches.append(batch)
                batch, size = [], 0
            batch.append(entity)
            size += cost
        if batch:
            batches.append(batch)
    return batches
