"""Property tests of ingest: generated bodies never cause a 5xx, and every 4xx names the field.

The validator (`shared.readings.parse_body`) is fuzzed directly, then the ingest function over the
local host's real HTTP. A broken field must come back as `readings[<index>].<field>`, the path the
400's `index` and `field` spell together. `FLEETSCORE_FUZZ_EXAMPLES` raises the example count for
a long run (issue 7's `make chaos`).
"""

from __future__ import annotations

import json
import string
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from local.host.http import HttpHost
from shared.errors import RequestError, ValidationError
from shared.readings import MAX_BODY_BYTES, MAX_METRICS, MAX_READINGS, format_timestamp, parse_body
from tests.api.conftest import KEY, fuzz_settings

NOW = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
FAST = fuzz_settings(200, http=False)  # the validator alone: cheap examples
WIRE = fuzz_settings(60, http=True)  # over HTTP: a few ms each

# --- strategies ------------------------------------------------------------------------------

device_ids = st.from_regex(r"[A-Za-z0-9_.\-]{1,64}", fullmatch=True)
metric_names = st.from_regex(r"[a-z][a-z0-9_]{0,39}", fullmatch=True)
metric_values = st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**53), 2**53)
offsets = st.sampled_from(["Z", "+00:00", "+05:30", "-08:00"])


@st.composite
def timestamps(draw: st.DrawFn, now: datetime) -> str:
    """A timestamp inside the ingest window (up to 6 days old), in a few offset spellings."""
    age = draw(st.integers(0, 6 * 24 * 3600 * 1000))
    ts = now - timedelta(milliseconds=age)
    suffix = draw(offsets)
    if suffix == "Z":
        return format_timestamp(ts)
    sign = 1 if suffix[0] == "+" else -1
    shift = timedelta(hours=int(suffix[1:3]), minutes=int(suffix[4:6])) * sign
    return (ts + shift).replace(tzinfo=None).isoformat(timespec="milliseconds") + suffix


def reading(now: datetime) -> st.SearchStrategy[dict[str, Any]]:
    """A reading the contract accepts."""
    return st.fixed_dictionaries(
        {
            "device_id": device_ids,
            "timestamp": timestamps(now),
            "metrics": st.dictionaries(metric_names, metric_values, min_size=1, max_size=8),
        }
    )


def shaped(items: list[dict[str, Any]], shape: str) -> Any:
    """The three body shapes of the contract."""
    if shape == "single":
        return items[0]
    return items if shape == "array" else {"readings": items}


# One broken field: (field as the 400 names it, a function that breaks a reading that way).
BAD_DEVICE = st.sampled_from(["", "x" * 65, "pump 7", "pump/7", "pümp", "a'b", 7, True, [], {}])
BAD_TIME = st.sampled_from(
    [
        "yesterday",
        "2026-11-27",
        "2026-11-27T07:00:00",  # no offset
        "2026-13-01T00:00:00Z",
        "2026-11-27T07:00:00Z" + "0" * 40,
        1764226800,
        [],
        {"at": 1},
    ]
)
BAD_VALUE = st.sampled_from(
    ["fast", True, False, [], {}, [1.5], 10**400, -(10**400), "NaN", "1.5", {"v": 1}]
)
BAD_NAME = st.sampled_from(["RPM", "1st", "_x", "a-b", "a" * 41, "ø", "temp c", ""])


@st.composite
def near_valid(draw: st.DrawFn, now: datetime) -> tuple[Any, int, str]:
    """A valid body with exactly one field broken; returns (body, index, field the 400 names)."""
    items = draw(st.lists(reading(now), min_size=1, max_size=6))
    index = draw(st.integers(0, len(items) - 1))
    item = dict(items[index])
    metrics = dict(item["metrics"])
    how = draw(st.sampled_from(["device", "time", "future", "old", "missing", "value", "name"]))
    how = draw(st.sampled_from([how, "count", "metrics", "extra"]))
    if how == "device":
        item["device_id"], field = draw(BAD_DEVICE), "device_id"
    elif how == "time":
        item["timestamp"], field = draw(BAD_TIME), "timestamp"
    elif how == "future":
        # Margins, so the clock moving between drawing and posting cannot make it valid.
        item["timestamp"] = format_timestamp(now + timedelta(minutes=15))
        field = "timestamp"
    elif how == "old":
        item["timestamp"], field = format_timestamp(now - timedelta(days=7, hours=1)), "timestamp"
    elif how == "missing":
        field = draw(st.sampled_from(["device_id", "timestamp", "metrics"]))
        del item[field]
    elif how == "value":
        name = draw(st.sampled_from(sorted(metrics)))
        metrics[name], field = draw(BAD_VALUE), f"metrics.{name}"
    elif how == "name":
        name = draw(BAD_NAME)
        metrics[name], field = 1.0, f"metrics.{name[:40]}"  # the 400 shows 40 characters
    elif how == "count":
        metrics = {f"m{i}": float(i) for i in range(MAX_METRICS + 1)}
        field = "metrics"
    elif how == "metrics":
        metrics, field = draw(st.sampled_from([{}, [], "x", 3, [{"a": 1}]])), "metrics"
    else:
        field = draw(st.text(string.ascii_letters, min_size=1, max_size=10).filter(_not_a_key))
        item[field] = draw(st.none() | st.integers())
    if "metrics" in item:
        item["metrics"] = metrics
    items[index] = item
    shape = draw(st.sampled_from(["array", "wrapped"] + (["single"] if len(items) == 1 else [])))
    return shaped(items, shape), index, field


def _not_a_key(name: str) -> bool:
    return name not in ("device_id", "timestamp", "metrics")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.floats()
    | st.integers()
    | st.text(max_size=20)
    | st.sampled_from([10**400, 1e308, -0.0]),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=30,
)
_depths = st.integers(1, 2000) | st.sampled_from([10_000, 100_000])
deep = _depths.map(lambda n: ("[" * n + "]" * n).encode()) | _depths.map(
    lambda n: ('{"a":' * n + "1" + "}" * n).encode()
)
random_bodies = (
    json_values.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=512)
    | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))
    | deep
    | st.sampled_from([b"", b"1e999999", b"9" * 5000, b'{"readings": null}', b"\xef\xbb\xbf{}"])
)
json_types = st.sampled_from(
    ["application/json", "application/json; charset=utf-8", "Application/JSON", "x/y+json"]
)
other_types = st.sampled_from(
    ["text/plain", "application/xml", "multipart/form-data", "application/x-www-form-urlencoded"]
) | st.text(string.ascii_letters + "/-.+", min_size=1, max_size=30).filter(
    lambda t: t.lower() != "application/json" and not t.lower().endswith("+json")
)

# --- checks ------------------------------------------------------------------------------


def details_of(status: int, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The 4xx contract: a JSON object with `error`, and `details` naming a field each."""
    assert 400 <= status < 500, status
    assert isinstance(body.get("error"), str)
    details = body["details"]
    assert details, body
    for detail in details:
        # A field, possibly "" when the body itself used "" as an unknown key.
        assert isinstance(detail["field"], str), body
        assert isinstance(detail["message"], str)
    return details


def path_of(detail: dict[str, Any]) -> str:
    """`readings[3].metrics.rpm` from `{"index": 3, "field": "metrics.rpm"}`."""
    if "index" in detail:
        return f"readings[{detail['index']}].{detail['field']}"
    return detail["field"]


def validate(body: bytes, content_type: str | None = "application/json") -> tuple[int, dict]:
    """The validator's verdict as the function would answer it (any other exception fails)."""
    try:
        readings = parse_body(body, now=NOW, content_type=content_type)
    except RequestError as exc:
        out: dict[str, Any] = {"error": exc.code, "message": str(exc)}
        if exc.field:
            out["details"] = [{"field": exc.field, "message": str(exc)}]
        return exc.status, out
    except ValidationError as exc:
        return 400, {"error": "validation", "details": [d.to_dict() for d in exc.details]}
    return 202, {"accepted": len(readings)}


def post(
    host: HttpHost, http: requests.Session, body: bytes, content_type: str | None
) -> tuple[int, dict]:
    headers = {"x-functions-key": KEY}
    if content_type is not None:
        headers["content-type"] = content_type
    response = http.post(f"{host.url}/api/readings", data=body, headers=headers, timeout=30)
    assert response.status_code < 500, (response.status_code, response.content[:300])
    assert response.headers["Content-Type"] == "application/json"
    return response.status_code, response.json()


# --- the validator ---------------------------------------------------------------------------


@FAST
@given(
    items=st.lists(reading(NOW), min_size=1, max_size=20),
    shape=st.sampled_from(["array", "wrapped", "single"]),
)
def test_validator_accepts_every_valid_body(items, shape):
    body = json.dumps(shaped(items, shape)).encode()
    count = 1 if shape == "single" else len(items)
    assert validate(body) == (202, {"accepted": count})


@FAST
@given(case=near_valid(NOW))
def test_validator_names_the_one_broken_field_by_its_path(case):
    body, index, field = case
    status, answer = validate(json.dumps(body).encode())
    paths = [path_of(d) for d in details_of(status, answer)]
    assert paths == [f"readings[{index}].{field}"]


@FAST
@given(body=random_bodies, content_type=json_types | st.none())
def test_validator_never_fails_unexpectedly_on_random_input(body, content_type):
    status, answer = validate(body, content_type)
    if status != 202:
        details_of(status, answer)


# --- the ingest function over HTTP -----------------------------------------------------------


@WIRE
@given(items=st.lists(reading(datetime.now(UTC)), min_size=1, max_size=20))
def test_ingest_http_accepts_valid_readings(host, http, hub, items):
    status, answer = post(host, http, json.dumps({"readings": items}).encode(), "application/json")
    assert (status, answer["accepted"]) == (202, len(items))


@WIRE
@given(case=near_valid(datetime.now(UTC)))
def test_ingest_http_400_names_the_broken_field(host, http, hub, case):
    body, index, field = case
    status, answer = post(host, http, json.dumps(body).encode(), "application/json")
    assert status == 400
    assert [path_of(d) for d in details_of(status, answer)] == [f"readings[{index}].{field}"]


@WIRE
@given(body=random_bodies, content_type=json_types | st.none())
def test_ingest_http_random_bodies_never_5xx_and_4xx_name_the_field(
    host, http, hub, body, content_type
):
    status, answer = post(host, http, body, content_type)
    if status != 202:
        details_of(status, answer)


@WIRE
@given(body=random_bodies, content_type=other_types)
def test_ingest_http_wrong_content_type_is_a_json_415(host, http, hub, body, content_type):
    assert post(host, http, body, content_type)[0] == 415


def test_ingest_http_over_the_size_and_count_limits_is_413_naming_the_field(host, http, hub):
    one = {"device_id": "d", "timestamp": format_timestamp(datetime.now(UTC)), "metrics": {"a": 1}}
    too_big = b'{"readings": [' + b" " * MAX_BODY_BYTES + b"]}"
    status, answer = post(host, http, too_big, "application/json")
    assert (status, answer["error"], details_of(status, answer)[0]["field"]) == (
        413,
        "too_large",
        "body",
    )
    many = json.dumps({"readings": [one] * (MAX_READINGS + 1)}).encode()
    status, answer = post(host, http, many, "application/json")
    assert (status, answer["error"], details_of(status, answer)[0]["field"]) == (
        413,
        "too_many_readings",
        "readings",
    )
    status, answer = post(host, http, json.dumps([one] * MAX_READINGS).encode(), None)
    assert (status, answer["accepted"]) == (202, MAX_READINGS)


# --- found by fuzzing, fixed: each case stays as a test ---------------------------------------


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_validator_timestamp_at_the_edge_of_the_calendar_is_a_400(stamp):
    body = json.dumps({"device_id": "d", "timestamp": stamp, "metrics": {"a": 1}}).encode()
    status, answer = validate(body)
    assert [path_of(d) for d in details_of(status, answer)] == ["readings[0].timestamp"]


def test_validator_wrong_content_type_415_names_the_header():
    status, answer = validate(b"{}", "text/plain")
    assert [d["field"] for d in details_of(status, answer)] == ["content-type"]
