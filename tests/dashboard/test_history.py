from __future__ import annotations

from datetime import timedelta

import pytest
import requests

from dashboard.history import MAX_POINTS, History
from tests.dashboard.conftest import KEY, NEWEST, QUERY_KEY, WALL, iso, prediction


@pytest.fixture
def with_history(make_dashboard, query_api):
    return make_dashboard(history=History(query_api.url, QUERY_KEY, wall=lambda: WALL))


def history(server, **params) -> requests.Response:
    return requests.get(f"{server.url}/history", params=params, timeout=10)


def test_history_reads_the_newest_minutes_through_the_query_function_with_its_key(
    with_history, query_api
):
    query_api.rows["pump-0001"] = [prediction("pump-0001", m) for m in range(30)]
    query_api.rows["pump-0002"] = [prediction("pump-0002", 0)]
    query_api.page_size = 4  # the window's 11 readings take three pages

    reply = history(with_history, device="pump-0001", minutes="10")

    assert reply.status_code == 200, reply.text
    doc = reply.json()
    assert doc["device_id"] == "pump-0001"
    assert doc["metrics"] == ["temperature_c", "vibration_mm_s"]
    assert doc["truncated"] is False
    assert [p["timestamp"] for p in doc["points"]] == [
        iso(NEWEST - timedelta(minutes=m)) for m in range(10, -1, -1)
    ]  # oldest first, up to the newest stored reading, not the wall clock
    assert doc["points"][0] == {
        "timestamp": iso(NEWEST - timedelta(minutes=10)),
        "anomaly_score": 0.001,
        "metrics": {"temperature_c": 70.0, "vibration_mm_s": 2.5},
    }
    sent = query_api.requests
    assert all(key == QUERY_KEY for _, _, key in sent)
    assert all(path == "/api/devices/pump-0001/predictions" for path, _, _ in sent)
    assert (sent[0][1]["limit"], sent[0][1]["order"]) == ("1", "desc")  # finds the newest
    assert any("continuation" in params for _, params, _ in sent)  # and follows the pages
    assert QUERY_KEY not in reply.text


def test_history_starts_from_the_push_rows_newest_reading_without_a_probe(with_history, query_api):
    query_api.rows["pump-0001"] = [prediction("pump-0001", m) for m in range(30)]
    row = {
        "device_id": "pump-0001",
        "window_start": iso(NEWEST - timedelta(minutes=5)),
        "readings": 5,
        "last_timestamp": iso(NEWEST - timedelta(minutes=2)),  # the sink lags the store
    }
    url = f"{with_history.url}/v1.0/myorg/datasets/{with_history.dataset.id}/tables"
    posted = requests.post(
        f"{url}/DeviceAggregates/rows",
        json={"rows": [row]},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=5,
    )
    assert posted.status_code == 200

    doc = history(with_history, device="pump-0001", minutes="5").json()

    assert [p["timestamp"] for p in doc["points"]] == [
        iso(NEWEST - timedelta(minutes=m)) for m in range(5, -1, -1)
    ]
    assert [params["limit"] for _, params, _ in query_api.requests] == ["1000"]  # no probe
    assert query_api.requests[0][1]["from"] == iso(NEWEST - timedelta(minutes=7))


def test_history_keeps_the_newest_points_when_the_window_holds_too_many(with_history, query_api):
    query_api.rows["pump-0001"] = [prediction("pump-0001", m) for m in range(MAX_POINTS + 500)]

    doc = history(with_history, device="pump-0001", minutes="10080").json()

    assert len(doc["points"]) == MAX_POINTS
    assert doc["truncated"] is True
    assert doc["points"][-1]["timestamp"] == iso(NEWEST)
    assert doc["points"][0]["timestamp"] == iso(NEWEST - timedelta(minutes=MAX_POINTS - 1))


def test_history_of_a_device_without_readings_is_empty(with_history, query_api):
    doc = history(with_history, device="pump-0404", minutes="60").json()
    assert (doc["points"], doc["metrics"]) == ([], [])
    assert len(query_api.requests) == 1


@pytest.mark.parametrize(
    ("params", "bad"),
    [
        ({"minutes": "60"}, "device"),
        ({"device": "pump/0001", "minutes": "60"}, "device"),
        ({"device": "x" * 65, "minutes": "60"}, "device"),
        ({"device": "pump-0001", "minutes": "0"}, "minutes"),
        ({"device": "pump-0001", "minutes": "ten"}, "minutes"),
        ({"device": "pump-0001", "minutes": "-5"}, "minutes"),
        ({"device": "pump-0001", "minutes": "10081"}, "minutes"),
    ],
)
def test_bad_parameters_are_400_naming_the_field(with_history, query_api, params, bad):
    reply = history(with_history, **params)
    assert reply.status_code == 400
    assert reply.json()["error"]["field"] == bad
    assert bad in reply.json()["error"]["message"]
    assert query_api.requests == []


def test_without_a_query_url_history_is_404_saying_how_to_turn_it_on(dashboard):
    reply = history(dashboard, device="pump-0001", minutes="60")
    assert reply.status_code == 404
    error = reply.json()["error"]
    assert error["code"] == "NotConfigured"
    assert "--query-url" in error["message"]


def test_a_refusal_of_the_query_function_is_502_without_the_key(with_history, query_api):
    query_api.status = 401
    reply = history(with_history, device="pump-0001", minutes="60")
    assert reply.status_code == 502
    assert reply.json()["error"]["code"] == "QueryFailed"
    assert "401" in reply.json()["error"]["message"]
    assert QUERY_KEY not in reply.text
