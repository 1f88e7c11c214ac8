"""The query function as the worker calls it: an HttpRequest in, an HttpResponse out."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import azure.functions as func
import pytest

import query_function
from shared.errors import ConfigError, TransientError
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


def test_build_store_prefers_tables_connection(monkeypatch):
    conn = "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=dGVzdA==;TableEndpoint=http://127.0.0.1:9/devstoreaccount1;"
    monkeypatch.setenv("TABLES_CONNECTION", conn)
    monkeypatch.setenv("TABLE_PREFIX", "dev7")
    store = query_function._build_store()
    try:
        assert (type(store), store.table_name("Predictions")) == (TableStore, "dev7Predictions")
    finally:
        store.close()


def test_build_store_falls_back_to_azure_web_jobs_storage(monkeypatch):
    monkeypatch.delenv("TABLES_CONNECTION", raising=False)
    monkeypatch.delenv("TABLE_PREFIX", raising=False)
    monkeypatch.setenv(
        "AzureWebJobsStorage",
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=dGVzdA==;TableEndpoint=http://127.0.0.1:9/devstoreaccount1;",
    )
    store = query_function._build_store()
    try:
        assert store.table_name("Anomalies") == "Anomalies"
    finally:
        store.close()


def test_build_store_without_a_connection_names_the_setting(monkeypatch):
    monkeypatch.delenv("TABLES_CONNECTION", raising=False)
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    with pytest.raises(ConfigError, match="TABLES_CONNECTION"):
        query_function._build_store()


def test_get_store_builds_once_and_reuses(monkeypatch):
    built = []
    monkeypatch.setattr(query_function, "_store", None)
    monkeypatch.setattr(
        query_function, "_build_store", lambda: built.append(1) or InMemoryTableStore()
    )
    first = query_function._get_store()
    assert query_function._get_store() is first
    assert built == [1]
