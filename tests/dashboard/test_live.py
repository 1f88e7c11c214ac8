from __future__ import annotations

import http.client
import json

import requests

from dashboard.live import FleetView, Hub
from dashboard.store import StoredRow
from tests.dashboard.conftest import KEY


def stored(rows: list[dict], received: float = 1000.0) -> list[StoredRow]:
    return [StoredRow(i, "ds", "t", received, r) for i, r in enumerate(rows)]


def window(
    device: str, start: str, *, readings: int = 60, fp: float | None = 0.1, due=False
) -> dict:
    return {
        "device_id": device,
        "window_start": start,
        "readings": readings,
        "max_anomaly_score": 0.2,
        "failure_probability": fp,
        "maintenance_due": due,
    }


W1, W2 = "2026-11-27T07:00:00.000Z", "2026-11-27T07:01:00.000Z"


def test_fleet_view_kpis_use_each_devices_latest_window():
    view = FleetView(interval_seconds=60)
    view.add(
        "DeviceAggregates",
        stored(
            [
                window("a", W1, fp=0.9),
                window("b", W1, readings=30, fp=0.2),
                window("c", W1, fp=None, due=True),
                window("a", W2, readings=90, fp=0.1),  # a recovered in its latest window
                window("b", W2, readings=30, fp=0.6),
            ]
        ),
    )
    view.add("Anomalies", stored([{"device_id": "a", "timestamp": W2}], received=1000.0))
    view.add("Anomalies", stored([{"device_id": "b", "timestamp": W2}], received=1200.0))
    snap = view.snapshot(now=1350.0)
    assert snap["kpis"] == {
        "readings_per_second": 2.0,  # (90 + 30) readings in the newest window / 60 s
        "anomalies_5min": 1,  # the one received at 1000 is more than 300 s old
        "devices_at_risk": 2,
        "devices": 3,
        "window_start": W2,
    }
    assert [(d["device_id"], d["at_risk"]) for d in snap["fleet"]] == [
        ("b", True),
        ("c", True),
        ("a", False),
    ]
    assert [a["device_id"] for a in snap["anomalies"]] == ["b", "a"]


def test_fleet_view_ignores_an_older_window_arriving_late():
    view = FleetView()
    view.add("DeviceAggregates", stored([window("a", W2, fp=0.1), window("a", W1, fp=0.9)]))
    assert view.snapshot(now=0)["fleet"][0]["failure_probability"] == 0.1


def test_hub_wakes_waiters_and_releases_them_on_close():
    hub = Hub()
    assert hub.wait(0, timeout=0.01) == 0
    hub.notify()
    assert hub.wait(0, timeout=5) == 1
    hub.close()
    assert hub.wait(1, timeout=5) == 1
    assert hub.closed


def read_event(stream: http.client.HTTPResponse) -> dict:
    """Read lines until one whole SSE event; the socket timeout is the deadline."""
    data = []
    while True:
        line = stream.fp.readline().decode().rstrip("\n")
        if line.startswith("data: "):
            data.append(line[6:])
        elif line == "" and data:
            return json.loads("\n".join(data))


def test_event_stream_delivers_a_new_row_within_a_deadline(dashboard):
    host, port = dashboard.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", "/events?device=pump-0042")
        stream = conn.getresponse()
        assert stream.status == 200
        assert stream.getheader("Content-Type") == "text/event-stream"
        first = read_event(stream)
        assert first["kpis"]["devices"] == 0
        url = f"{dashboard.url}/v1.0/myorg/datasets/{dashboard.dataset.id}/tables/DeviceAggregates/rows"
        row = window("pump-0042", W1, fp=0.7)
        assert requests.post(
            url, json={"rows": [row]}, headers={"Authorization": f"Bearer {KEY}"}, timeout=5
        ).ok
        snap = read_event(stream)
        while snap["kpis"]["devices"] == 0:  # a heartbeat may come first
            snap = read_event(stream)
    except TimeoutError as exc:
        raise AssertionError("no event with the new row within 5 s") from exc
    finally:
        conn.close()
    assert snap["fleet"] == [{**row, "at_risk": True}]
    assert snap["device"] == "pump-0042"
    assert snap["series"]["failure_probability"] == [0.7]


def test_page_and_chart_library_are_served(dashboard):
    page = requests.get(f"{dashboard.url}/", timeout=5)
    assert page.status_code == 200
    assert "text/html" in page.headers["Content-Type"]
    assert 'id="kpi-readings"' in page.text
    for path in ("/static/app.js", "/static/app.css", "/vendor/uplot.js", "/vendor/uplot.css"):
        assert requests.get(f"{dashboard.url}{path}", timeout=5).status_code == 200, path
    assert requests.get(f"{dashboard.url}/healthz", timeout=5).json() == {"status": "ok"}
    assert requests.get(f"{dashboard.url}/nope", timeout=5).status_code == 404
