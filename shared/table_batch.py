"""A lean Table `$batch` writer: idempotent upserts in one transaction, at a fraction of the CPU.

`azure-data-tables`' `TableClient.submit_transaction` spends most of a score host's CPU on a
hundred-entity transaction: it builds one `HttpRequest` per operation through generated code,
runs the header policies over each of them on a fresh thread pool, and writes and parses the
multipart body with Python's `email` package. This module writes the same bytes from string
templates (one `json.dumps` per entity) and sends them through the client's own pipeline, so
authentication (SharedKey or a TokenCredential), retries, logging and the transport stay the
SDK's.

A transaction may end with one *guarded* operation: an entity created only if its row is
missing, or replaced only if its row still has a given ETag (a device's state, which then commits
atomically with its predictions). Its new ETag is read from the answer.

Only success is read here: a 202 whose parts all answer 2xx. Anything else is answered by
sending the same operations again through the SDK (`submit_transaction`, or `upsert_entity` for a
single upsert), so errors are the SDK's exceptions, raised by the SDK's own code. Upserts replace
whole entities, so sending one twice leaves the same rows; a guarded operation that did commit
the first time is refused the second time, which the caller reads as "changed since read".
Connection errors from the pipeline propagate as the SDK raised them.

The body equals the SDK's byte for byte, boundaries and dates aside
(`tests/shared/test_table_batch.py` holds the two side by side).
"""

from __future__ import annotations

import json
import logging
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import Any
from urllib.parse import quote
from wsgiref.handlers import format_date_time

from azure.core import MatchConditions
from azure.core.rest import HttpRequest
from azure.data.tables import EdmType, TableClient, UpdateMode
from azure.data.tables._serialize import _add_entity_properties

__all__ = ["Guarded", "encode_upserts", "upsert_transaction", "write_transaction"]

log = logging.getLogger(__name__)

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_DOUBLE_WORDS = {math.inf: "Infinity", -math.inf: "-Infinity"}
_STRING, _DOUBLE, _INT64 = "Edm.String", "Edm.Double", "Edm.Int64"
_URL_SAFE = re.compile(r"[A-Za-z0-9_.~-]*").fullmatch  # what `quote` leaves alone
_NAMES: dict[str, tuple[str, str, str, str]] = {}  # property name -> its JSON prefixes
_MAX_NAMES = 4096
_ETAG = re.compile(rb"\nETag: ([^\r\n]+)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Guarded:
    """An entity written only over the row that was read.

    Created if `etag` is None, else replaced only while the row still has `etag` (`If-Match`).
    """

    entity: Mapping[str, Any]
    etag: str | None


def _sdk_properties(name: str, value: Any) -> dict[str, Any]:
    """The SDK's own typing for a value the fast path does not cover (datetime, UUID, bytes...).

    Delegating keeps those byte-identical, and keeps the SDK's TypeError for unsupported values.
    """
    return _add_entity_properties({name: value})


def _is_int64(value: tuple[Any, ...]) -> bool:
    """`(int, EdmType.INT64)` in range: what `shared._entities._value` makes of a big int."""
    return (
        len(value) == 2
        and type(value[0]) is int
        and value[1] == EdmType.INT64
        and _INT64_MIN <= value[0] <= _INT64_MAX
    )


def _properties(entity: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON object the SDK sends for `entity` (its `_add_entity_properties`, fast path).

    str: `Edm.String`; float: `Edm.Double` (NaN and infinities as strings); bool and int32:
    untyped; `(int, EdmType.INT64)`: `Edm.Int64` as a string; None: skipped.
    """
    out: dict[str, Any] = {}
    for name, value in entity.items():
        kind = type(value)
        if kind is str:
            out[name] = value
            out[name + "@odata.type"] = _STRING
        elif kind is float:
            if value != value:
                value = "NaN"
            elif value in _DOUBLE_WORDS:
                value = _DOUBLE_WORDS[value]
            out[name] = value
            out[name + "@odata.type"] = _DOUBLE
        elif kind is bool or (kind is int and _INT32_MIN <= value <= _INT32_MAX):
            out[name] = value
        elif value is None:
            continue
        elif kind is tuple and _is_int64(value):
            out[name] = str(value[0])
            out[name + "@odata.type"] = _INT64
        else:
            out.update(_sdk_properties(name, value))
    return out


def _names(name: object) -> tuple[str, str, str, str] | None:
    """How `name` and its `@odata.type` annotations start in JSON; None for odd names.

    A name holding `@` could collide with another's annotation, which the SDK's dict resolves
    its own way: such an entity takes the general route.
    """
    if type(name) is not str or "@" in name:
        return None
    if len(_NAMES) >= _MAX_NAMES:  # property names repeat; a stream of new ones must not pile up
        _NAMES.clear()
    typed = encode_basestring_ascii(name + "@odata.type")
    _NAMES[name] = found = (
        encode_basestring_ascii(name) + ": ",
        f', {typed}: "{_STRING}"',
        f', {typed}: "{_DOUBLE}"',
        f', {typed}: "{_INT64}"',
    )
    return found


def _entity_json(entity: Mapping[str, Any]) -> str:
    """`json.dumps(_properties(entity))`, written directly for the common value types.

    Strings, doubles, booleans, int32 and Int64 tuples are written from cached name prefixes
    with the `json` module's own string escaping and `repr`; anything else (or an odd name)
    takes the general route through a dict.
    """
    parts: list[str] = []
    add = parts.append
    for name, value in entity.items():
        kind = type(value)
        names = _NAMES.get(name) or _names(name)
        if names is None:
            return json.dumps(_properties(entity))
        if kind is str:
            add(names[0] + encode_basestring_ascii(value) + names[1])
        elif kind is float:
            if value != value:
                text = '"NaN"'
            elif value in _DOUBLE_WORDS:
                text = f'"{_DOUBLE_WORDS[value]}"'
            else:
                text = float.__repr__(value)
            add(names[0] + text + names[2])
        elif kind is bool:
            add(names[0] + ("true" if value else "false"))
        elif kind is int and _INT32_MIN <= value <= _INT32_MAX:
            add(names[0] + int.__repr__(value))
        elif value is None:
            continue
        elif kind is tuple and _is_int64(value):
            add(f'{names[0]}"{int.__repr__(value[0])}"{names[3]}')
        else:
            return json.dumps(_properties(entity))
    return "{" + ", ".join(parts) + "}"


def _key(entity: Mapping[str, Any], name: str) -> str:
    """A key as it goes into the operation's URL: quotes doubled (OData), then percent-encoded."""
    key = entity[name]
    if type(key) is str and _URL_SAFE(key):  # row keys usually are: skip `quote`'s work
        return key
    try:
        return quote(entity[name].replace("'", "''"), safe="")
    except AttributeError as exc:
        raise TypeError("PartitionKey or RowKey must be of type string.") from exc


def encode_upserts(
    entities: Sequence[Mapping[str, Any]],
    *,
    table_url: str,
    version: str,
    date: str | None = None,
    batch_id: str | None = None,
    changeset_id: str | None = None,
    guarded: Guarded | None = None,
) -> tuple[str, bytes]:
    """Encode InsertOrReplace operations as one `$batch` body; return (Content-Type, body).

    The body is what `submit_transaction([("upsert", e, {"mode": UpdateMode.REPLACE}), ...])`
    sends for the same entities (followed by `_sdk_operations`' create or conditional update
    for `guarded`).

    Args:
        entities: at least one entity (or none, with `guarded`), all with one PartitionKey.
        table_url: `<scheme>://<host>[/<account>]/<table>`, the prefix of each operation's URL.
        version: the service version (`x-ms-version`) of each operation.
        date: the HTTP date of each operation's `Date` headers; now by default.
        batch_id: the batch boundary's UUID; random by default.
        changeset_id: the changeset boundary's UUID; random by default.
        guarded: a last operation, conditional on its row (same PartitionKey).

    Raises:
        ValueError: no entities, a missing key, or more than one PartitionKey (as the SDK).
        TypeError: a key that is not a string or a value the SDK cannot store (as the SDK).

    Example:
        >>> content_type, body = encode_upserts(
        ...     [{"PartitionKey": "a", "RowKey": "1", "v": 1.5}],
        ...     table_url="http://127.0.0.1:10002/devstoreaccount1/T",
        ...     version="2019-02-02",
        ...     date="Fri, 27 Nov 2026 07:00:00 GMT",
        ...     batch_id="b",
        ...     changeset_id="c",
        ... )
        >>> content_type
        'multipart/mixed; boundary=batch_b'
        >>> body.splitlines()[8]
        b"PUT http://127.0.0.1:10002/devstoreaccount1/T(PartitionKey='a',RowKey='1') HTTP/1.1"
    """
    operations = [*entities, guarded.entity] if guarded is not None else list(entities)
    if not operations:
        raise ValueError("a transaction needs at least one operation")
    batch = f"batch_{batch_id or uuid.uuid4()}"
    changeset = f"changeset_{changeset_id or uuid.uuid4()}"
    date = date or format_date_time(None)
    first = operations[0]
    if "PartitionKey" not in first or "RowKey" not in first:
        raise ValueError("PartitionKey and/or RowKey were not provided in entity")
    partition_key = first["PartitionKey"]
    url = f"{table_url}(PartitionKey='{_key(first, 'PartitionKey')}',RowKey='"
    length = "') HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: "
    headers = (
        f"\r\nx-ms-version: {version}\r\nDataServiceVersion: 3.0\r\nAccept: application/json\r\n"
        f"x-ms-date: {date}\r\nDate: {date}\r\n\r\n"
    )
    part = (
        f"--{changeset}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
        "Content-ID: "
    )
    out = [f"--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n"]
    for index, entity in enumerate(operations):
        if "PartitionKey" not in entity or "RowKey" not in entity:
            raise ValueError("PartitionKey and/or RowKey were not provided in entity")
        if entity["PartitionKey"] != partition_key:
            raise ValueError("Partition Keys in the batch must all be the same.")
        row_key = _key(entity, "RowKey")
        text = _entity_json(entity)  # ASCII: the SDK's default json.dumps escapes the rest
        if guarded is not None and index == len(entities):
            out.append(f"{part}{index}\r\n\r\n{_guarded_head(guarded, table_url, url, row_key)}")
            out.append(f"Content-Length: {len(text)}{_guarded_headers(guarded, headers)}{text}\r\n")
            continue
        out.append(f"{part}{index}\r\n\r\nPUT {url}{row_key}{length}{len(text)}{headers}{text}\r\n")
    out.append(f"--{changeset}--\r\n\r\n--{batch}--\r\n")
    return f"multipart/mixed; boundary={batch}", "".join(out).encode("ascii")


def _guarded_head(guarded: Guarded, table_url: str, url: str, row_key: str) -> str:
    """The request line and Content-Type of a create (POST to the table) or a replace."""
    if guarded.etag is None:
        return f"POST {table_url} HTTP/1.1\r\nContent-Type: application/json\r\n"
    return f"PUT {url}{row_key}') HTTP/1.1\r\nContent-Type: application/json\r\n"


def _guarded_headers(guarded: Guarded, headers: str) -> str:
    """The upsert's headers, as the SDK writes them for a create or an If-Match replace."""
    if guarded.etag is None:
        return headers.replace(
            "Accept: application/json\r\n", "Accept: application/json;odata=minimalmetadata\r\n"
        )
    if "\r" in guarded.etag or "\n" in guarded.etag:
        raise ValueError("an ETag cannot hold a line break")
    return headers.replace(
        "Accept: application/json\r\n", f"Accept: application/json\r\nIf-Match: {guarded.etag}\r\n"
    )


def _sdk_operations(
    entities: Sequence[Mapping[str, Any]], guarded: Guarded | None
) -> list[tuple[Any, ...]]:
    """The same transaction as `submit_transaction` operations."""
    ops: list[tuple[Any, ...]] = [("upsert", e, {"mode": UpdateMode.REPLACE}) for e in entities]
    if guarded is not None and guarded.etag is None:
        ops.append(("create", guarded.entity))
    elif guarded is not None:
        ops.append(
            (
                "update",
                guarded.entity,
                {
                    "mode": UpdateMode.REPLACE,
                    "etag": guarded.etag,
                    "match_condition": MatchConditions.IfNotModified,
                },
            )
        )
    return ops


def _all_succeeded(body: bytes, operations: int) -> bool:
    """True when the changeset answers every operation, each with a 2xx status line."""
    return body.count(b"\nHTTP/1.1 ") == operations == body.count(b"\nHTTP/1.1 2")


def upsert_transaction(client: TableClient, entities: Sequence[Mapping[str, Any]]) -> None:
    """Insert or replace `entities` (one PartitionKey, ≤ 100, ≤ 4 MiB) in one transaction.

    See `write_transaction`.
    """
    if entities:
        write_transaction(client, entities)


def write_transaction(
    client: TableClient,
    entities: Sequence[Mapping[str, Any]],
    guarded: Guarded | None = None,
) -> str | None:
    """Insert or replace `entities`, then write `guarded`, all or nothing, in one transaction.

    One PartitionKey, ≤ 100 operations and ≤ 4 MiB in all. The transaction goes through
    `client`'s own pipeline. When the service does not answer a 202 with every operation 2xx,
    the same operations are sent again through the SDK (`submit_transaction`, or
    `upsert_entity` for a lone upsert), and whatever the service answers then is raised as the
    SDK's own exception (`TableTransactionError`, `HttpResponseError`, ...), exactly as
    without this module. A guarded row changed since it was read is the SDK's
    `TableTransactionError` with `error_code` `UpdateConditionNotSatisfied` (replace),
    `EntityAlreadyExists` (create) or `ResourceNotFound` (replace of a deleted row).

    Returns:
        The guarded row's new ETag; None without `guarded`, or if the answer did not carry it.

    Raises:
        ValueError: as `encode_upserts`.
        TypeError: as `encode_upserts`.
        azure.core.exceptions.AzureError: what the SDK raises for the refused operations, or a
            connection error from the pipeline.
    """
    account_url = f"{client.scheme}://{client._primary_hostname}"  # as `_batch_send` builds it
    content_type, body = encode_upserts(
        entities,
        table_url=f"{account_url}/{quote(client.table_name, safe='')}",
        version=client.api_version,
        guarded=guarded,
    )
    request = HttpRequest(
        "POST",
        f"{account_url}/$batch",
        headers={
            "x-ms-version": client.api_version,
            "DataServiceVersion": "3.0",
            "MaxDataServiceVersion": "3.0;NetFx",
            "Content-Type": content_type,
            "Accept": "application/json",
        },
        content=body,
    )
    response = client._client.send_request(request, stream=True)
    try:
        answer = response.read()
    finally:
        response.close()
    operations = len(entities) + (guarded is not None)
    if response.status_code == 202 and _all_succeeded(answer, operations):
        if guarded is None:
            return None
        tags = _ETAG.findall(answer)
        return tags[-1].decode("ascii", "replace").strip() if len(tags) == operations else None
    log.debug(
        "table %s answered a %d-operation transaction with %d; resending through the SDK",
        client.table_name,
        operations,
        response.status_code,
    )
    if guarded is None and len(entities) == 1:
        client.upsert_entity(entities[0], mode=UpdateMode.REPLACE)
        return None
    results = client.submit_transaction(_sdk_operations(entities, guarded))
    if guarded is None:
        return None
    return str(results[-1].get("etag")) if results and results[-1].get("etag") else None
