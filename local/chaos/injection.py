"""Probe 3: OData injection, path tricks and odd parameters against the query API.

The query function builds Table Storage filters from a device id and dates; a quote in the id,
a dot-segment in the path or a forged continuation token must each be a 4xx naming the field,
never a 5xx and never another device's rows. The tricks are listed here, one request each.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlsplit

from local.demo.stack import Stack
from shared.readings import format_timestamp

from .probing import PROBE_DEVICE, Answer, Probe, Seen, Tally, send_raw

__all__ = ["probe_query_injection"]


@dataclass(frozen=True)
class _Trick:
    what: str  # how the detail names it
    target: str  # after /api, as sent on the wire
    field: str | None  # the field a 400 must name; None when only a 404 fits


def _device_tricks() -> Iterator[_Trick]:
    def enc(device: str, safe: str = "") -> str:
        return f"/devices/{quote(device, safe=safe)}/predictions"

    for device in [
        "x' or PartitionKey ne '",
        "' or 1 eq 1 or '",
        "pump-0001' or PartitionKey gt '",
        "x') or (PartitionKey ne '",
        "*",
        "a b",
    ]:
        yield _Trick(f"device id {device!r} (percent-encoded)", enc(device), "device_id")
    yield _Trick("device id with a raw quote", enc("x' or true", safe="'"), "device_id")
    yield _Trick(
        "device id 'x%27%20or%20true' as sent", "/devices/x%27%20or%20true/predictions", "device_id"
    )
    yield _Trick("device id %00", "/devices/%00/predictions", "device_id")
    yield _Trick("device id pump%00", "/devices/pump%00/predictions", "device_id")
    yield _Trick(
        "device id ..%2F..%2Fanomalies", "/devices/..%2F..%2Fanomalies/predictions", "device_id"
    )
    yield _Trick("device id %2e%2e%2fx", "/devices/%2e%2e%2fx/predictions", "device_id")
    yield _Trick("a 10,000-character device id", enc("a" * 10_000), "device_id")
    yield _Trick("a 65-character device id", enc("a" * 65), "device_id")
    for label, device in [
        ("fullwidth apostrophe", "x\uff07 or 1 eq 1"),
        ("right single quote", "x\u2019 or true"),
        ("Cyrillic homoglyph", "\u0440ump-0001"),
        ("fullwidth letters", "\uff50\uff55\uff4d\uff50-0001"),
        ("zero-width space", "pump\u200b-0001"),
        ("right-to-left override", "pump-\u202e1000"),
        ("combining accent", "pump-0001\u0301"),
        ("overlong UTF-8 slash", None),
    ]:
        target = "/devices/%C0%AF..%C0%AFanomalies/predictions" if device is None else enc(device)
        yield _Trick(f"device id with a {label}", target, "device_id")
    # Path tricks the router must not resolve to another resource.
    for target in [
        "/devices/../../Predictions",
        "/devices/../../Predictions/predictions",
        f"/devices/{PROBE_DEVICE}/../../anomalies/x",
        "/devices/x/predictions/..%2F..%2Fanomalies",
        f"/devices/{PROBE_DEVICE}/Predictions%2F..",
        "/anomalies/x'%20or%20'1'%20eq%20'1",
        f"/devices/{PROBE_DEVICE}",
        "/Predictions",
        "/DeviceState/x/state",
    ]:
        yield _Trick(f"path {target}", target, None)


def _param_tricks() -> Iterator[_Trick]:
    device = f"/devices/{PROBE_DEVICE}/predictions"
    now = datetime.now(UTC)
    other = _forged_token("pump-0001", now)
    for name, value in [
        ("from", "2026-01-01T00:00:00Z' or PartitionKey ne '"),
        ("from", "' or 1 eq 1 or '"),
        ("to", "2026-01-01T00:00:00Z) or (true"),
        ("to", "9999-12-31T23:59:59Z%00"),
        ("limit", "1 or 1 eq 1"),
        ("limit", "-1"),
        ("limit", "0"),
        ("limit", "1000000"),
        ("limit", "1e3"),
        ("limit", "\uff11\uff10"),  # fullwidth digits: int() would take them
        ("order", "asc' or '1"),
        ("order", "desc;drop"),
        ("anomalies_only", "true' or '1' eq '1"),
        ("continuation", "' or 1 eq 1 or '"),
        ("continuation", base64.urlsafe_b64encode(b'{"k":"x\' or true"}').decode().rstrip("=")),
        ("continuation", other),
        ("continuation", "A" * 5000),
        ("$filter", "PartitionKey ne ''"),
        ("PartitionKey", "pump-0001"),
    ]:
        target = f"{device}?{quote(name, safe='')}={quote(value, safe='')}"
        yield _Trick(f"{name}={value[:60]!r}", target, name)
    for name, value in [
        ("date", "2026-11-27' or PartitionKey ne '"),
        ("date", "../../Predictions"),
        ("date", "2026-13-45"),
        ("date", "\uff12\uff10\uff12\uff16-11-27"),
        ("limit", "1 or true"),
        ("continuation", other),
        ("$filter", "true"),
    ]:
        target = f"/anomalies?{quote(name, safe='')}={quote(value, safe='')}"
        yield _Trick(f"anomalies {name}={value[:60]!r}", target, name)


def _forged_token(device_id: str, now: datetime) -> str:
    """A well-formed continuation token for another device's query (a replay across devices)."""
    doc = {
        "a": False,
        "d": device_id,
        "f": format_timestamp(now - timedelta(hours=24)),
        "k": "20261127T070000.000Z",
        "o": "asc",
        "t": format_timestamp(now),
    }
    text = json.dumps(doc, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def probe_query_injection(stack: Stack, *, seen: Seen | None = None) -> Probe:
    """OData injection, path tricks and odd parameters, with the key: a 4xx and no rows, ever.

    A 400 must be `{"error": "validation", "details": [...]}` naming the field; a path the
    router does not match may be a 404. A 200 (rows of some device) or any 5xx is a failure.
    """
    seen = [] if seen is None else seen
    tally = Tally("query refuses injection and path tricks")
    base = urlsplit(stack.api_url).path
    key = {"x-functions-key": stack.function_key}
    tricks = [*_device_tricks(), *_param_tricks()]
    for trick in tricks:
        answer = send_raw(stack.api_url, "GET", base + trick.target, headers=key)
        seen.append(answer.text())
        if problem := _injection_problem(trick, answer):
            tally.failures.append(f"{trick.what} -> {answer.shown}: {problem}")
    tally.checked.append(
        f"{len(tricks)} requests with the key (device ids, paths, from/to/limit/order/"
        "anomalies_only/continuation/date, unknown $filter): each a 4xx without rows"
    )
    return tally.probe()


def _injection_problem(trick: _Trick, answer: Answer) -> str:
    body = answer.body.decode("utf-8", "replace")
    if answer.status >= 500:
        return f"a server error: {body[:200]!r}"
    if answer.status < 400:
        return f"not refused; body starts {body[:200]!r}"
    try:
        doc = json.loads(body) if body else None
    except ValueError:
        doc = None
    if isinstance(doc, dict) and doc.get("items"):
        return "the error carries rows"
    if answer.status == 404 and trick.field is None:
        return ""
    if answer.status != 400:
        expected = "400 or 404" if trick.field is None else "400"
        return f"expected {expected}; body {body[:200]!r}"
    if not isinstance(doc, dict) or doc.get("error") != "validation":
        return f"a 400 without a validation document: {body[:200]!r}"
    fields = [str(d.get("field")) for d in doc.get("details", []) if isinstance(d, dict)]
    if trick.field is not None and not any(f.startswith(trick.field) for f in fields):
        return f"the 400 names {fields}, not {trick.field!r}"
    return ""
