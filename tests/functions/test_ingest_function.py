"""The ingest function called the documented way: build an HttpRequest, call main()."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import azure.functions as func
import pytest

import ingest_function
from shared.errors import PermanentError, TransientError
from shared.publisher import InMemoryPublisher
from shared.readings import format_timestamp
from shared.telemetry import Metrics
from shared.wiring import IngestApp


@pytest.fixture
def hub(monkeypatch) -> InMemoryPublisher:
    publisher = InMemoryPublisher()
    monkeypatch.setattr(ingest_function, "_app", IngestApp(publisher))
    return publisher


def post(body: bytes, content_type: str | None = "application/json") -> func.HttpResponse:
    headers = {"content-type": content_type} if content_type else {}
    req = func.HttpRequest(
        method="POST", url="/api/readings", headers=headers, params={}, route_params={}, body=body
    )
    return ingest_function.main(req)


def reading(device: str, seconds_ago: int = 60, **metrics: float) -> dict:
    ts = datetime.now(UTC) - timedelta(seconds=seconds_ago)
    return {
        "device_id": device,
        "timestamp": format_timestamp(ts),
        "metrics": metrics or {"temperature_c": 70.5},
    }


def answer(resp: func.HttpResponse) -> tuple[int, dict]:
    assert resp.mimetype == "application/json"
    return resp.status_code, json.loads(resp.get_body())


def test_ingest_202_one_event_per_device(hub):
    body = json.dumps({"readings": [reading("a", 30), reading("b"), reading("a", 20)]}).encode()
    assert answer(post(body)) == (202, {"accepted": 3, "events": 2})
    assert [e.partition_key for e in hub.events] == ["a", "b"]
    first = json.loads(hub.events[0].body)
    assert (first["schema"], first["device_id"], len(first["readings"])) == (1, "a", 2)
    assert hub.events[0].properties["count"] == 2


def test_ingest_202_single_reading_without_content_type(hub):
    assert answer(post(json.dumps(reading("a")).encode(), None)) == (
        202,
        {"accepted": 1, "events": 1},
    )


def test_ingest_400_names_fields_and_publishes_nothing(hub):
    body = json.dumps(
        [reading("a"), reading("b", rpm="fast"), reading("c", seconds_ago=-3600)]
    ).encode()
    assert answer(post(body)) == (
        400,
        {
            "error": "validation",
            "details": [
                {"index": 1, "field": "metrics.rpm", "message": "must be a finite number"},
                {
                    "index": 2,
                    "field": "timestamp",
                    "message": "is more than 5 minutes in the future",
                },
            ],
        },
    )
    assert hub.events == []


def test_ingest_413_over_one_mib(hub):
    status, doc = answer(post(b"[" + b" " * (1024 * 1024) + b"]"))
    assert (status, doc["error"]) == (413, "too_large")
    assert hub.events == []


def test_ingest_413_over_5000_readings(hub):
    status, doc = answer(post(json.dumps([reading("a")] * 5001).encode()))
    assert (status, doc["error"], doc["details"][0]["field"]) == (413, "too_many_readings", "body")


def test_ingest_415_for_a_body_that_is_not_json(hub):
    status, doc = answer(post(b"temperature=70"))
    assert (status, doc["error"]) == (415, "not_json")


def test_ingest_415_for_a_non_json_content_type(hub):
    status, doc = answer(post(json.dumps(reading("a")).encode(), "text/csv"))
    assert (status, doc["error"]) == (415, "unsupported_media_type")


def test_ingest_503_with_retry_after_when_event_hubs_is_down(hub):
    hub.fail_with = TransientError("unreachable", retry_after=5)
    resp = post(json.dumps(reading("a")).encode())
    assert answer(resp) == (
        503,
        {"error": "eventhubs_unavailable", "message": "Event Hubs cannot be reached; retry"},
    )
    assert resp.headers["Retry-After"] == "5"


def test_ingest_503_when_event_hubs_refuses(hub):
    hub.fail_with = PermanentError("unauthorized")
    resp = post(json.dumps(reading("a")).encode())
    assert answer(resp)[0] == 503
    assert resp.headers["Retry-After"] == "30"


def test_ingest_500_is_json_and_logged(hub, caplog):
    hub.fail_with = RuntimeError("bug")
    resp = post(json.dumps(reading("a")).encode())
    assert answer(resp) == (500, {"error": "internal", "message": "unexpected error; retry"})
    assert "ingest failed unexpectedly" in caplog.text


def test_ingest_producer_is_created_once_per_worker():
    from shared import wiring

    assert wiring.ingest_app() is wiring.ingest_app()
    assert ingest_function._app is wiring.ingest_app()


def test_ingest_function_counts_readings_and_tags_records_with_the_invocation_id(
    monkeypatch, caplog
):
    class Context:
        invocation_id = "0d9e8a52-0000-4000-8000-000000000002"

    metrics = Metrics()
    monkeypatch.setattr(ingest_function, "_app", IngestApp(InMemoryPublisher(), metrics))
    caplog.set_level(logging.INFO)
    body = json.dumps([reading("a"), reading("b"), reading("a", 30)]).encode()
    req = func.HttpRequest(
        method="POST",
        url="/api/readings",
        headers={"content-type": "application/json"},
        params={},
        route_params={},
        body=body,
    )
    assert ingest_function.main(req, context=Context()).status_code == 202
    assert post(b"[]").status_code == 400
    assert metrics.counts() == {
        "fleetscore.ingest.readings_accepted": 3,
        "fleetscore.ingest.requests_rejected": 1,
    }
    [line] = [r for r in caplog.records if r.getMessage().startswith("ingest accepted")]
    assert line.invocation_id == Context.invocation_id
    assert line.__dict__["fleetscore.readings"] == 3
