from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta

import requests

from dashboard.limits import Limits
from shared.powerbi import PowerBISink, PushTarget, requests_transport
from shared.predictions import Prediction
from tests.dashboard.conftest import KEY
from tests.support.waiting import wait_until

AUTH = {"Authorization": f"Bearer {KEY}"}


def agg(device: str, window: str = "2026-11-27T07:00:00.000Z", **extra) -> dict:
    row = {
        "device_id": device,
        "window_start": window,
        "readings": 60,
        "anomalies": 0,
        "mean_anomaly_score": 0.1,
        "max_anomaly_score": 0.2,
        "failure_probability": 0.1,
        "max_failure_probability": 0.1,
        "maintenance_due": False,
        "last_timestamp": window,
    }
    return {**row, **extra}


def rows_url(server, table: str = "DeviceAggregates") -> str:
    return f"{server.url}/v1.0/myorg/datasets/{server.dataset.id}/tables/{table}/rows"


def stored(db_path, table: str) -> list[dict]:
    with sqlite3.connect(db_path) as db:
        found = db.execute("SELECT body FROM rows WHERE tbl = ? ORDER BY seq", (table,)).fetchall()
    return [json.loads(b) for (b,) in found]


def test_rest_post_stores_rows_in_sqlite(dashboard, tmp_path):
    rows = [agg("pump-0001"), agg("pump-0002", failure_probability=0.9)]
    reply = requests.post(rows_url(dashboard), json={"rows": rows}, headers=AUTH, timeout=5)
    assert (reply.status_code, reply.content) == (200, b"")
    assert stored(tmp_path / "dash.sqlite3", "DeviceAggregates") == rows
    assert dashboard.store.table_rows(dashboard.dataset.id, "DeviceAggregates") == 2


def test_rest_post_needs_the_bearer_token(dashboard):
    body = {"rows": [agg("pump-0001")]}
    missing = requests.post(rows_url(dashboard), json=body, timeout=5)
    wrong = requests.post(
        rows_url(dashboard), json=body, headers={"Authorization": "Bearer no"}, timeout=5
    )
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "PowerBINotAuthorizedException"
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (403, "TokenExpired")
    assert dashboard.store.table_rows(dashboard.dataset.id, "DeviceAggregates") == 0


def test_push_url_takes_a_bare_array_with_the_key(dashboard):
    base = f"{dashboard.url}/beta/tenant-1/datasets/{dashboard.dataset.id}/rows"
    ok = requests.post(f"{base}?key={KEY}", json=[agg("pump-0003")], timeout=5)
    missing = requests.post(base, json=[agg("pump-0004")], timeout=5)
    wrong = requests.post(f"{base}?key=nope", json=[agg("pump-0005")], timeout=5)
    assert [ok.status_code, missing.status_code, wrong.status_code] == [200, 403, 403]
    assert wrong.json() == {"error": {"code": "Unauthorized", "message": "key is missing or wrong"}}
    assert [
        r["device_id"] for r in dashboard.store.rows(dashboard.dataset.id, "DeviceAggregates")
    ] == ["pump-0003"]


def test_unknown_dataset_table_or_workspace_is_404(dashboard):
    ds = dashboard.dataset.id
    urls = [
        f"{dashboard.url}/v1.0/myorg/datasets/nope/tables/Anomalies/rows",
        f"{dashboard.url}/v1.0/myorg/datasets/{ds}/tables/Nope/rows",
        f"{dashboard.url}/v1.0/myorg/groups/ws-9/datasets/{ds}/tables/Anomalies/rows",
    ]
    replies = [requests.post(u, json={"rows": []}, headers=AUTH, timeout=5) for u in urls]
    assert [(r.status_code, r.json()["error"]["code"]) for r in replies] == [
        (404, "ItemNotFound")
    ] * 3


def test_too_many_rows_and_bad_bodies_are_400_with_power_bi_errors(make_dashboard):
    server = make_dashboard(limits=Limits(rows_per_post=3))
    url = rows_url(server)
    too_many = requests.post(
        url, json={"rows": [agg(f"d{i}") for i in range(4)]}, headers=AUTH, timeout=5
    )
    not_json = requests.post(url, data=b"{oops", headers=AUTH, timeout=5)
    assert too_many.status_code == 400
    assert too_many.json() == {
        "error": {"code": "InvalidRequest", "message": "4 rows in one POST; at most 3"}
    }
    assert not_json.status_code == 400
    assert not_json.json() == {"error": {"code": "InvalidRequest", "message": "body is not JSON"}}


def test_posts_over_the_minute_limit_get_429_with_retry_after(make_dashboard):
    server = make_dashboard(limits=Limits(posts_per_minute=3))
    replies = [
        requests.post(rows_url(server), json={"rows": [agg("d")]}, headers=AUTH, timeout=5)
        for _ in range(4)
    ]
    assert [r.status_code for r in replies] == [200, 200, 200, 429]
    assert replies[-1].headers["Retry-After"] == "60"
    assert replies[-1].json()["error"] == {
        "code": "TooManyRequests",
        "message": "more than 3 POST rows requests in a minute",
    }


def test_rows_over_the_hour_limit_get_429(make_dashboard):
    server = make_dashboard(limits=Limits(rows_per_hour=5))
    first = requests.post(rows_url(server), json={"rows": [agg("d")] * 4}, headers=AUTH, timeout=5)
    second = requests.post(rows_url(server), json={"rows": [agg("d")] * 2}, headers=AUTH, timeout=5)
    assert (first.status_code, second.status_code) == (200, 429)
    assert server.store.table_rows(server.dataset.id, "DeviceAggregates") == 4


def test_basic_fifo_keeps_the_newest_rows_per_table(make_dashboard):
    server = make_dashboard(limits=Limits(fifo_rows=5))
    for batch in range(3):
        rows = [agg(f"d{batch}-{i}") for i in range(3)]
        assert requests.post(rows_url(server), json={"rows": rows}, headers=AUTH, timeout=5).ok
    kept = server.store.rows(server.dataset.id, "DeviceAggregates")
    assert [r["device_id"] for r in kept] == ["d1-1", "d1-2", "d2-0", "d2-1", "d2-2"]
    assert server.store.table_rows(server.dataset.id, "DeviceAggregates") == 5


def test_create_dataset_answers_201_and_a_taken_name_makes_a_second_dataset(dashboard):
    url = f"{dashboard.url}/v1.0/myorg/groups/ws-1/datasets?defaultRetentionPolicy=basicFIFO"
    definition = {
        "name": "fleet-b",
        "defaultMode": "Push",
        "tables": [{"name": "Readings", "columns": [{"name": "device_id", "dataType": "string"}]}],
    }
    first = requests.post(url, json=definition, headers=AUTH, timeout=5)
    again = requests.post(url, json=definition, headers=AUTH, timeout=5)
    assert (first.status_code, again.status_code) == (201, 201)
    assert first.json() == {
        "id": first.json()["id"],
        "name": "fleet-b",
        "defaultRetentionPolicy": "basicFIFO",
    }
    assert first.json()["id"] != again.json()["id"]
    listed = requests.get(
        f"{dashboard.url}/v1.0/myorg/groups/ws-1/datasets", headers=AUTH, timeout=5
    )
    assert [(d["name"], d["id"]) for d in listed.json()["value"]] == [
        ("fleet-b", first.json()["id"]),
        ("fleet-b", again.json()["id"]),
    ]
    mine = requests.get(f"{dashboard.url}/v1.0/myorg/datasets", headers=AUTH, timeout=5).json()
    assert [d["name"] for d in mine["value"]] == ["fleetscore"]
    ds = first.json()["id"]
    tables = requests.get(
        f"{dashboard.url}/v1.0/myorg/groups/ws-1/datasets/{ds}/tables", headers=AUTH, timeout=5
    )
    assert tables.json() == {
        "value": [{"name": "Readings", "columns": [{"name": "device_id", "dataType": "String"}]}]
    }
    pushed = requests.post(
        f"{dashboard.url}/v1.0/myorg/groups/ws-1/datasets/{ds}/tables/Readings/rows",
        json={"rows": [{"device_id": "x"}]},
        headers=AUTH,
        timeout=5,
    )
    assert pushed.status_code == 200
    bad = requests.post(
        url, json={"name": "x", "tables": [{"name": "T", "columns": []}]}, headers=AUTH, timeout=5
    )
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "InvalidRequest")
    unauth = requests.get(f"{dashboard.url}/v1.0/myorg/datasets", timeout=5)
    assert unauth.status_code == 401


def test_a_bad_data_type_or_duplicate_column_is_400(dashboard):
    url = f"{dashboard.url}/v1.0/myorg/datasets"

    def create(columns: list[dict]) -> requests.Response:
        body = {"name": "x", "tables": [{"name": "T", "columns": columns}]}
        return requests.post(url, json=body, headers=AUTH, timeout=5)

    odd = create([{"name": "v", "dataType": "Float"}])
    twice = create([{"name": "v", "dataType": "Int64"}, {"name": "v", "dataType": "Double"}])
    assert (odd.status_code, odd.json()["error"]["message"]) == (
        400,
        "column 'v' has an unknown dataType 'Float'",
    )
    assert (twice.status_code, twice.json()["error"]["message"]) == (
        400,
        "table 'T' has two columns named 'v'",
    )


def test_put_table_replaces_an_existing_tables_columns_only(dashboard):
    ds = dashboard.dataset.id
    base = f"{dashboard.url}/v1.0/myorg/datasets/{ds}/tables"
    columns = [{"name": "device_id", "dataType": "String"}, {"name": "score", "dataType": "bool"}]
    put = requests.put(
        f"{base}/Anomalies", json={"name": "Anomalies", "columns": columns}, headers=AUTH, timeout=5
    )
    missing = requests.put(
        f"{base}/Nope", json={"name": "Nope", "columns": columns}, headers=AUTH, timeout=5
    )
    renamed = requests.put(
        f"{base}/Anomalies", json={"name": "Other", "columns": columns}, headers=AUTH, timeout=5
    )
    unauth = requests.put(f"{base}/Anomalies", json={"name": "Anomalies", "columns": columns})
    assert (put.status_code, put.json()) == (200, {"name": "Anomalies"})
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "ItemNotFound")
    assert (renamed.status_code, renamed.json()["error"]["code"]) == (400, "InvalidRequest")
    assert unauth.status_code == 401
    listed = requests.get(base, headers=AUTH, timeout=5).json()["value"]
    assert {t["name"]: t["columns"] for t in listed}["Anomalies"] == [
        {"name": "device_id", "dataType": "String"},
        {"name": "score", "dataType": "Boolean"},
    ]
    assert [t["name"] for t in listed] == ["DeviceAggregates", "Anomalies"]


def test_powerbi_sink_pushes_to_the_dashboard_end_to_end(dashboard, tmp_path):
    t0 = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
    predictions = [
        Prediction(
            device_id=f"pump-{i:04d}",
            timestamp=t0 + timedelta(seconds=i),
            anomaly_score=0.95 if i % 4 == 0 else 0.1,
            is_anomaly=i % 4 == 0,
            top_metric="vibration_mm_s" if i % 4 == 0 else None,
            failure_probability=0.3,
            maintenance_due=False,
            model_version="m-1",
        )
        for i in range(12)
    ]
    with requests.Session() as session:
        sink = PowerBISink(
            PushTarget(dataset_id=dashboard.dataset.id, api_url=dashboard.url),
            transport=requests_transport(session, timeout=5.0),
            token_provider=lambda: KEY,
            interval_seconds=0.2,
        )
        sink.start()
        try:
            sink.offer(predictions)
            db = tmp_path / "dash.sqlite3"
            assert wait_until(
                lambda: (
                    len(stored(db, "Anomalies")) == 3 and len(stored(db, "DeviceAggregates")) == 12
                ),
                timeout=10,
            )
        finally:
            sink.close(timeout=5.0)
    assert sink.stats.rows_pushed == sink.stats.rows_offered == 15
    anomalies = stored(tmp_path / "dash.sqlite3", "Anomalies")
    assert [r["device_id"] for r in anomalies] == ["pump-0000", "pump-0004", "pump-0008"]
    assert {
        r["device_id"]: r["readings"] for r in stored(tmp_path / "dash.sqlite3", "DeviceAggregates")
    } == {f"pump-{i:04d}": 1 for i in range(12)}
    snapshot = requests.get(f"{dashboard.url}/api/snapshot", timeout=5).json()
    assert snapshot["kpis"]["devices"] == 12
    assert snapshot["kpis"]["anomalies_5min"] == 3


def test_rows_survive_a_restart(make_dashboard, tmp_path):
    db = str(tmp_path / "kept.sqlite3")
    first = make_dashboard(db=db)
    assert requests.post(
        rows_url(first),
        json={"rows": [agg("pump-0009", failure_probability=0.8)]},
        headers=AUTH,
        timeout=5,
    ).ok
    first.close()
    again = make_dashboard(db=db)
    assert again.dataset.id == first.dataset.id
    snapshot = requests.get(f"{again.url}/api/snapshot", timeout=5).json()
    assert [d["device_id"] for d in snapshot["fleet"]] == ["pump-0009"]
    assert snapshot["kpis"]["devices_at_risk"] == 1


def test_a_dataset_without_fifo_keeps_every_row_and_slows_to_the_big_table_rate(make_dashboard):
    server = make_dashboard(limits=Limits(big_table_rows=3, big_table_posts_per_hour=3))
    created = requests.post(
        f"{server.url}/v1.0/myorg/datasets?defaultRetentionPolicy=None",
        json={
            "name": "raw",
            "tables": [{"name": "T", "columns": [{"name": "v", "dataType": "Int64"}]}],
        },
        headers=AUTH,
        timeout=5,
    ).json()
    url = f"{server.url}/v1.0/myorg/datasets/{created['id']}/tables/T/rows"
    statuses = [
        requests.post(url, json={"rows": [{"v": i}, {"v": i}]}, headers=AUTH, timeout=5).status_code
        for i in range(4)
    ]
    # 2 rows, then 4 (now a "big" table): the third POST of the hour is the last one allowed.
    assert statuses == [200, 200, 200, 429]
    assert server.store.table_rows(created["id"], "T") == 6
    assert requests.post(rows_url(server), json={"rows": [agg("d")]}, headers=AUTH, timeout=5).ok


def test_a_broken_database_answers_500_not_a_dropped_connection(make_dashboard, tmp_path):
    server = make_dashboard(db=str(tmp_path / "broken.sqlite3"))
    server.store.close()
    reply = requests.post(rows_url(server), json={"rows": [agg("d")]}, headers=AUTH, timeout=5)
    assert (reply.status_code, reply.json()["error"]["code"]) == (500, "InternalServerError")


def test_a_workspace_the_api_does_not_know_is_404_when_workspaces_are_listed(make_dashboard):
    server = make_dashboard(workspaces=["ws-known"])
    base = f"{server.url}/v1.0/myorg/groups"
    known = requests.get(f"{base}/ws-known/datasets", headers=AUTH, timeout=5)
    unknown = requests.get(f"{base}/ws-other/datasets", headers=AUTH, timeout=5)
    mine = requests.get(f"{server.url}/v1.0/myorg/datasets", headers=AUTH, timeout=5)
    assert (known.status_code, known.json()) == (200, {"value": []})
    assert (unknown.status_code, unknown.json()["error"]) == (
        404,
        {"code": "PowerBIEntityNotFound", "message": "workspace 'ws-other' not found"},
    )
    assert [d["name"] for d in mine.json()["value"]] == ["fleetscore"]
