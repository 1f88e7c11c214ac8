"""The query function as the worker calls it: an HttpRequest in, an HttpResponse out."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import azure.functions as func
import pytest

import query_function
from shared.errors import TransientError
from shared.predictions import Prediction
from shared.store import InMemoryTableStore, TableStore

T0 = datetime(2026, 11, 27, 6, 0, tzinfo=UTC)
WINDOW = {"from": "2026-11-27T00:00:00Z", "to": "2026-11-28T00:00:00Z"}
PREDICTION = Prediction(
    device_id="pump-0007",
    timestamp=T0,
    anomaly_score=0.93,
    is_anomaly=True,
    top_metric="vibration_mm_s",
    failure_probability=0.4,
    maintenance_due=True,
    model_version="iforest-3",
    metrics={"vibration_mm_s": 9.5},
    extra={"horizon_h": 12},
)
ITEM = {
    "device_id": "pump-0007",
    "timestamp": "2026-11-27T06:00:00.000Z",
    "anomaly_score": 0.93,
    "is_anomaly": True,
    "top_metric": "vibration_mm_s",
    "failure_probability": 0.4,
    "maintenance_due": True,
    "model_version": "iforest-3",
    "metrics": {"vibration_mm_s": 9.5},
    "horizon_h": 12,
}


@pytest.fixture
def store(monkeypatch) -> InMemoryTableStore:
    s = InMemoryTableStore()
    s.upsert_predictions([PREDICTION])
    s.upsert_anomalies([PREDICTION])
    monkeypatch.setattr(query_function, "_store", s)
    return s


def get(
    path: str, route: dict[str, str], params: dict[str, str] | None = None
) -> func.HttpResponse:
    req = func.HttpRequest(
        method="GET",
        url=f"http://localhost:7071/api/{path}",
        params=params or {},
        route_params=route,
        body=b"",
    )
    return query_function.main(req)


def unpack(resp: func.HttpResponse) -> tuple[int, str, dict]:
    return resp.status_code, resp.mimetype, json.loads(resp.get_body())


def test_main_device_predictions_returns_json(store):
    resp = get(
        "devices/pump-0007/predictions",
        {"collection": "devices", "device_id": "pump-0007", "view": "predictions"},
        {**WINDOW, "code": "function-key"},
    )
    assert unpack(resp) == (
        200,
        "application/json",
        {"device_id": "pump-0007", "items": [ITEM], "continuation": None},
    )


def test_main_anomalies_returns_json(store):
    resp = get("anomalies", {"collection": "anomalies"}, {"date": "2026-11-27"})
    assert unpack(resp) == (
        200,
        "application/json",
        {"date": "2026-11-27", "items": [ITEM], "continuation": None},
    )


def test_main_hostile_device_id_is_400_and_reads_nothing(monkeypatch):
    class Exploding:
        def list_predictions(self, *args, **kwargs):
            raise AssertionError("the store must not be called")

    monkeypatch.setattr(query_function, "_store", Exploding())
    device = "x' or PartitionKey ne 'x"
    resp = get(
        "devices/x'%20or%20PartitionKey%20ne%20'x/predictions",
        {"collection": "devices", "device_id": device, "view": "predictions"},
    )
    assert unpack(resp) == (
        400,
        "application/json",
        {
            "error": "validation",
            "details": [
                {"field": "device_id", "message": "must be 1-64 characters of A-Z a-z 0-9 _ . -"}
            ],
        },
    )


def test_main_unknown_route_is_404(store):
    resp = get("devices/pump-0007", {"collection": "devices", "device_id": "pump-0007"})
    assert unpack(resp)[:2] == (404, "application/json")


def test_main_storage_unavailable_is_503_with_retry_after(monkeypatch):
    class Down:
        def list_anomalies(self, *args, **kwargs):
            raise TransientError("table storage unreachable", retry_after=12)

    monkeypatch.setattr(query_function, "_store", Down())
    resp = get("anomalies", {"collection": "anomalies"}, {"date": "2026-11-27"})
    assert unpack(resp) == (
        503,
        "application/json",
        {"error": "unavailable", "message": "storage is unavailable; retry in 12 s"},
    )
    assert resp.headers["Retry-After"] == "12"


def test_main_unexpected_error_is_a_json_500(monkeypatch, caplog):
    class Broken:
        def list_anomalies(self, *args, **kwargs):
            raise KeyError("bug")

    monkeypatch.setattr(query_function, "_store", Broken())
    resp = get("anomalies", {"collection": "anomalies"})
    assert unpack(resp) == (
        500,
        "application/json",
        {"error": "internal", "message": "unexpected error"},
    )
    assert [r.getMessage() for r in caplog.records] == ["query failed unexpectedly"]


def test_query_store_is_built_once_per_worker_from_settings():
    from shared import wiring

    assert query_function._store is wiring.query_store()
    assert isinstance(query_function._store, TableStore)
    assert query_function._store.table_name("Predictions") == "Predictions"
