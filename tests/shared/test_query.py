"""The query API core against the in-memory store: parameters, paging tokens, error mapping."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest

from shared.errors import PermanentError, TransientError
from shared.predictions import Prediction
from shared.query import handle_anomalies, handle_device_predictions, handle_request
from shared.store import InMemoryTableStore

NOW = datetime(2026, 11, 27, 7, 0, 0, 456789, tzinfo=UTC)
T0 = datetime(2026, 11, 27, 6, 0, tzinfo=UTC)


def pred(device: str, ts: datetime, *, anomaly: bool = False) -> Prediction:
    return Prediction(
        device_id=device,
        timestamp=ts,
        anomaly_score=0.8 if anomaly else 0.1,
        is_anomaly=anomaly,
        top_metric="rpm",
        failure_probability=0.2,
        maintenance_due=False,
        model_version="m-1",
        metrics={"rpm": 50.0},
    )


READINGS = [pred("pump-1", T0 + timedelta(minutes=10 * i), anomaly=i in (1, 4)) for i in range(6)]


@pytest.fixture
def store() -> InMemoryTableStore:
    s = InMemoryTableStore()
    s.upsert_predictions([*READINGS, pred("pump-1", NOW - timedelta(days=2)), pred("pump-2", T0)])
    s.upsert_anomalies([*READINGS, pred("pump-2", T0 + timedelta(minutes=5), anomaly=True)])
    return s


class Refusing:
    """A store whose every call raises the given error (and counts the calls)."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error or AssertionError("the store must not be called")
        self.calls = 0

    def list_predictions(self, *args, **kwargs):
        self.calls += 1
        raise self.error

    list_anomalies = list_predictions


def predictions(store, device="pump-1", **params):
    return handle_device_predictions(device, params, store=store, now=NOW)


def follow(store, device="pump-1", **params) -> list[list[str]]:
    """Timestamps page by page, following the continuation token to the end."""
    pages = []
    while True:
        status, body, _ = predictions(store, device, **params)
        assert status == 200, body
        pages.append([item["timestamp"] for item in body["items"]])
        if body["continuation"] is None:
            return pages
        params["continuation"] = body["continuation"]


def details(*pairs: tuple[str, str]) -> tuple[int, dict, dict]:
    return (
        400,
        {"error": "validation", "details": [{"field": f, "message": m} for f, m in pairs]},
        {},
    )


def token(doc: dict) -> str:
    text = json.dumps(doc, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


# --- device predictions ---------------------------------------------------------------------


def test_handle_device_predictions_defaults_to_the_last_24_hours_oldest_first(store):
    assert predictions(store) == (
        200,
        {"device_id": "pump-1", "items": [p.to_json() for p in READINGS], "continuation": None},
        {},
    )


def test_handle_device_predictions_honours_from_to_with_offsets(store):
    status, body, _ = predictions(
        store, **{"from": "2026-11-27T07:10:00+01:00", "to": "2026-11-27T06:30:00Z"}
    )
    assert (status, [i["timestamp"] for i in body["items"]]) == (
        200,
        ["2026-11-27T06:10:00.000Z", "2026-11-27T06:20:00.000Z"],
    )


def test_handle_device_predictions_newest_first_and_anomalies_only(store):
    status, body, _ = predictions(store, order="desc", anomalies_only="1")
    assert (status, [i["timestamp"] for i in body["items"]]) == (
        200,
        ["2026-11-27T06:40:00.000Z", "2026-11-27T06:10:00.000Z"],
    )


def test_handle_device_predictions_pages_with_continuation_tokens_both_ways(store):
    ascending = [p.to_json()["timestamp"] for p in READINGS]
    assert follow(store, limit="4") == [ascending[:4], ascending[4:]]
    assert follow(store, limit="2", order="desc") == [
        ascending[5:3:-1],
        ascending[3:1:-1],
        ascending[1::-1],
    ]


def test_handle_device_predictions_token_is_urlsafe_json_naming_its_query(store):
    _, body, _ = predictions(store, limit="2")
    assert body["continuation"] == token(
        {
            "a": False,
            "d": "pump-1",
            "f": "2026-11-26T07:00:00.456Z",
            "k": "20261127T061000.000Z",
            "o": "asc",
            "t": "2026-11-27T07:00:00.456Z",
        }
    )


def test_handle_device_predictions_token_keeps_the_default_window_when_now_moves(store):
    _, first, _ = predictions(store, limit="4")
    later = NOW + timedelta(hours=3)
    status, body, _ = handle_device_predictions(
        "pump-1", {"limit": "4", "continuation": first["continuation"]}, store=store, now=later
    )
    assert (status, [i["timestamp"] for i in body["items"]]) == (
        200,
        ["2026-11-27T06:40:00.000Z", "2026-11-27T06:50:00.000Z"],
    )


@pytest.mark.parametrize(
    "change",
    [
        {"device": "pump-2"},
        {"order": "desc"},
        {"anomalies_only": "true"},
        {"from": "2026-11-26T08:00:00Z"},
        {"to": "2026-11-27T06:55:00Z"},
    ],
)
def test_handle_device_predictions_token_reused_with_another_query_is_400(store, change):
    _, first, _ = predictions(store, limit="2")
    params = {"limit": "2", "continuation": first["continuation"], **change}
    device = params.pop("device", "pump-1")
    assert predictions(store, device, **params) == details(
        ("continuation", "belongs to another query")
    )


@pytest.mark.parametrize(
    "bad",
    [
        "not base64!",
        base64.urlsafe_b64encode(b"\xff\xfe").decode().rstrip("="),
        token({"k": "20261127T061000.000Z"})[:-2],
        token(
            {"a": False, "d": "pump-1", "f": "x", "k": "20261127T061000.000Z", "o": "asc", "t": "y"}
        )
        + "A",
        base64.urlsafe_b64encode(b'{"k": "x"}').decode(),  # padded and not compact
        "A" * 1025,
    ],
)
def test_handle_device_predictions_rejects_malformed_tokens(store, bad):
    assert predictions(store, continuation=bad) == details(
        ("continuation", "is not a valid continuation token")
    )


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"k": "20261127T061000.000Z"},
        {"a": False, "d": "pump-1", "f": "x", "k": "2026-11-27", "o": "asc", "t": "y"},
        {"a": False, "d": "pump-1", "f": "x", "k": ["list"], "o": "asc", "t": "y"},
        {"day": "2026-11-27", "k": "20261127T061000.000Z_pump-1"},
    ],
)
def test_handle_device_predictions_rejects_tokens_of_another_shape(store, doc):
    assert predictions(store, continuation=token(doc)) == details(
        ("continuation", "is not a predictions token")
    )


def test_handle_device_predictions_hostile_device_id_is_400_and_never_reaches_the_store():
    spy = Refusing()
    assert predictions(spy, "x' or PartitionKey ne 'x") == details(
        ("device_id", "must be 1-64 characters of A-Z a-z 0-9 _ . -")
    )
    assert spy.calls == 0


def test_handle_device_predictions_reports_every_bad_parameter_at_once():
    spy = Refusing()
    result = predictions(
        spy,
        **{
            "from": "yesterday",
            "to": "2026-11-27T07:00:00",
            "limit": "0",
            "order": "newest",
            "anomalies_only": "yes",
            "sort": "x",
            "Limit": "5",
        },
    )
    assert result == details(
        ("Limit", "unknown parameter"),
        ("sort", "unknown parameter"),
        ("limit", "must be an integer from 1 to 1000"),
        ("anomalies_only", "must be true, false, 1 or 0"),
        ("order", "must be asc or desc"),
        ("from", "not an ISO 8601 date-time: 'yesterday'"),
        ("to", "needs a UTC offset such as Z or +00:00: '2026-11-27T07:00:00'"),
    )
    assert spy.calls == 0


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "+5", " 5", "5_0", "1e2", "abc", ""])
def test_handle_device_predictions_limit_must_be_1_to_1000(limit):
    assert predictions(Refusing(), limit=limit) == details(
        ("limit", "must be an integer from 1 to 1000")
    )


def test_handle_device_predictions_accepts_the_limit_bounds(store):
    assert predictions(store, limit="1")[0] == 200
    assert predictions(store, limit="1000")[0] == 200


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (
            {"from": "2026-11-27T07:00:00Z", "to": "2026-11-27T07:00:00Z"},
            ("from", "must be before to"),
        ),
        (
            {"from": "2026-11-27T08:00:00Z", "to": "2026-11-27T07:00:00Z"},
            ("from", "must be before to"),
        ),
        (
            {"from": "2026-10-27T06:59:59.999Z", "to": "2026-11-27T07:00:00Z"},
            ("to", "must be at most 31 days after from"),
        ),
        (
            {"to": "2026-11-20T07:00:00Z", "from": "2026-12-01T00:00:00Z"},
            ("from", "must be before to"),
        ),
    ],
)
def test_handle_device_predictions_checks_the_time_range(params, expected):
    assert predictions(Refusing(), **params) == details(expected)


def test_handle_device_predictions_accepts_exactly_31_days(store):
    status, body, _ = predictions(
        store, **{"from": "2026-10-27T07:00:00Z", "to": "2026-11-27T07:00:00Z"}
    )
    assert (status, len(body["items"])) == (200, 7)


def test_handle_device_predictions_ignores_the_function_key_parameter(store):
    assert predictions(store, code="secret-key")[0] == 200


def test_handle_device_predictions_unknown_device_is_an_empty_page(store):
    assert predictions(store, "pump-9") == (
        200,
        {"device_id": "pump-9", "items": [], "continuation": None},
        {},
    )


# --- storage errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_after", "header"),
    [(2.5, "3"), (0.2, "1"), (None, "5"), (float("inf"), "5")],
)
def test_handle_device_predictions_transient_storage_error_is_503_with_retry_after(
    retry_after, header
):
    result = predictions(
        Refusing(TransientError("table storage answered 503", retry_after=retry_after))
    )
    assert result == (
        503,
        {"error": "unavailable", "message": f"storage is unavailable; retry in {header} s"},
        {"Retry-After": header},
    )


def test_handle_device_predictions_permanent_storage_error_is_502_without_details():
    error = PermanentError(
        "table storage refused query AccountKey=c2VjcmV0 at 127.0.0.1", status=403
    )
    assert predictions(Refusing(error)) == (
        502,
        {"error": "storage", "message": "storage refused the query"},
        {},
    )


def test_handle_anomalies_transient_storage_error_is_503():
    status, _, headers = handle_anomalies({}, store=Refusing(TransientError("down")), now=NOW)
    assert (status, headers) == (503, {"Retry-After": "5"})


# --- anomalies ------------------------------------------------------------------------------


def test_handle_anomalies_defaults_to_today_utc(store):
    later = datetime(2026, 11, 28, 0, 30, tzinfo=UTC)
    assert handle_anomalies({}, store=store, now=later) == (
        200,
        {"date": "2026-11-28", "items": [], "continuation": None},
        {},
    )
    status, body, _ = handle_anomalies({}, store=store, now=NOW)
    assert (status, body["date"], [(i["device_id"], i["timestamp"]) for i in body["items"]]) == (
        200,
        "2026-11-27",
        [
            ("pump-2", "2026-11-27T06:05:00.000Z"),
            ("pump-1", "2026-11-27T06:10:00.000Z"),
            ("pump-1", "2026-11-27T06:40:00.000Z"),
        ],
    )


def test_handle_anomalies_pages_with_continuation(store):
    status, first, _ = handle_anomalies({"date": "2026-11-27", "limit": "2"}, store=store, now=NOW)
    assert (status, len(first["items"])) == (200, 2)
    assert first["continuation"] == token({"day": "2026-11-27", "k": "20261127T061000.000Z_pump-1"})
    # the date may be left out on the next page: the token carries it, even past midnight
    status, second, _ = handle_anomalies(
        {"limit": "2", "continuation": first["continuation"]},
        store=store,
        now=datetime(2026, 11, 28, 0, 1, tzinfo=UTC),
    )
    assert (status, second["date"], second["continuation"]) == (200, "2026-11-27", None)
    assert [i["timestamp"] for i in second["items"]] == ["2026-11-27T06:40:00.000Z"]


def test_handle_anomalies_token_for_another_day_is_400(store):
    _, first, _ = handle_anomalies({"limit": "1"}, store=store, now=NOW)
    assert handle_anomalies(
        {"date": "2026-11-26", "continuation": first["continuation"]}, store=store, now=NOW
    ) == details(("continuation", "belongs to another query"))


def test_handle_anomalies_rejects_a_predictions_token(store):
    _, first, _ = predictions(store, limit="1")
    assert handle_anomalies(
        {"continuation": first["continuation"]}, store=store, now=NOW
    ) == details(("continuation", "is not an anomalies token"))


@pytest.mark.parametrize(
    "day", ["2026-11-31", "27-11-2026", "2026-1-5", "today", "2026-11-27T00:00:00Z"]
)
def test_handle_anomalies_rejects_a_bad_date(day):
    assert handle_anomalies({"date": day}, store=Refusing(), now=NOW) == details(
        ("date", "must be a date YYYY-MM-DD")
    )


def test_handle_anomalies_rejects_unknown_parameters_and_a_bad_limit():
    assert handle_anomalies({"device_id": "a", "limit": "x"}, store=Refusing(), now=NOW) == details(
        ("device_id", "unknown parameter"),
        ("limit", "must be an integer from 1 to 1000"),
    )


# --- routing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "route",
    [
        {"collection": "devices", "device_id": "pump-1"},
        {"collection": "devices", "device_id": "pump-1", "view": "state"},
        {"collection": "devices"},
        {"collection": "anomalies", "device_id": "pump-1"},
        {"collection": "things"},
        {},
    ],
)
def test_handle_request_unknown_route_is_404(route):
    assert handle_request(route, {}, store=Refusing(), now=NOW) == (
        404,
        {
            "error": "not_found",
            "message": "no such resource: use /api/devices/{device_id}/predictions or /api/anomalies",
        },
        {},
    )


def test_handle_request_dispatches_both_endpoints(store):
    route = {"collection": "devices", "device_id": "pump-1", "view": "predictions"}
    assert handle_request(route, {}, store=store, now=NOW) == predictions(store)
    anomalies = {"collection": "anomalies", "device_id": None, "view": ""}
    assert handle_request(anomalies, {}, store=store, now=NOW) == handle_anomalies(
        {}, store=store, now=NOW
    )
