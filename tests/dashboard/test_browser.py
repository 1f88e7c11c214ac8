from __future__ import annotations

from pathlib import Path

import pytest
import requests
from playwright.sync_api import expect, sync_playwright

from dashboard.history import History
from tests.dashboard.conftest import KEY, QUERY_KEY, WALL, prediction

CHROMIUM = Path("/usr/bin/chromium")
W1 = "2026-11-27T07:00:00.000Z"


def post(server, table: str, rows: list[dict]) -> None:
    url = f"{server.url}/v1.0/myorg/datasets/{server.dataset.id}/tables/{table}/rows"
    reply = requests.post(
        url, json={"rows": rows}, headers={"Authorization": f"Bearer {KEY}"}, timeout=5
    )
    assert reply.status_code == 200, reply.text


def aggregate(device: str, fp: float, due: bool = False) -> dict:
    return {
        "device_id": device,
        "window_start": W1,
        "readings": 60,
        "anomalies": 1,
        "mean_anomaly_score": 0.2,
        "max_anomaly_score": 0.9,
        "failure_probability": fp,
        "max_failure_probability": fp,
        "maintenance_due": due,
        "last_timestamp": W1,
    }


@pytest.mark.browser
def test_page_shows_pushed_rows_live_without_reload(dashboard, tmp_path):
    assert CHROMIUM.exists(), "Debian's chromium is missing: `make setup` installs it"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{dashboard.url}/")
            expect(page.locator("#status")).to_contain_text("live", timeout=10_000)
            expect(page.locator("#kpi-readings")).to_have_text("0.0")
            page.evaluate("window.loadedOnce = true")  # gone if the page reloads

            post(
                dashboard,
                "DeviceAggregates",
                [
                    aggregate("pump-0001", 0.1),
                    aggregate("pump-0002", 0.8),
                    aggregate("pump-0003", 0.3, due=True),
                ],
            )
            post(
                dashboard,
                "Anomalies",
                [
                    {
                        "device_id": "pump-0002",
                        "timestamp": W1,
                        "anomaly_score": 0.9,
                        "top_metric": "vibration_mm_s",
                        "failure_probability": 0.8,
                        "maintenance_due": False,
                        "model_version": "m-1",
                    }
                ],
            )

            expect(page.locator("#kpi-readings")).to_have_text("3.0", timeout=10_000)  # 180 / 60 s
            expect(page.locator("#kpi-risk")).to_have_text("2", timeout=10_000)
            expect(page.locator("#kpi-anomalies")).to_have_text("1", timeout=10_000)
            rows = page.locator("#fleet tbody tr")
            expect(rows).to_have_count(3, timeout=10_000)
            assert [rows.nth(i).get_attribute("data-device") for i in range(3)] == [
                "pump-0002",
                "pump-0003",
                "pump-0001",
            ]
            expect(page.locator("#feed li")).to_have_text(
                ["2026-11-27 07:00:00 pump-0002 · score 0.90 · vibration_mm_s"]
            )
            expect(page.locator("#chart .uplot")).to_have_count(1)
            expect(page.locator("#metrics-chart")).to_contain_text(  # no --query-url here
                "--query-url", timeout=10_000
            )
            assert page.evaluate("window.loadedOnce") is True
            assert errors == []
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        finally:
            browser.close()


@pytest.mark.browser
def test_readings_chart_follows_the_selected_device(make_dashboard, query_api):
    assert CHROMIUM.exists(), "Debian's chromium is missing: `make setup` installs it"
    query_api.rows["pump-0001"] = [prediction("pump-0001", m) for m in range(0, 60, 2)]
    query_api.rows["pump-0002"] = [prediction("pump-0002", m) for m in range(0, 60, 5)]
    server = make_dashboard(history=History(query_api.url, QUERY_KEY, wall=lambda: WALL))
    post(server, "DeviceAggregates", [aggregate("pump-0001", 0.9), aggregate("pump-0002", 0.1)])
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{server.url}/")
            box = page.locator("#metrics-chart")
            expect(box).to_have_attribute("data-device", "pump-0001", timeout=10_000)
            expect(box).to_have_attribute("data-points", "30")  # the 6 h span holds them all
            expect(box.locator(".uplot")).to_have_count(1)
            legend = box.locator(".u-legend .u-series")
            # time, two metrics, the anomaly score; the legend gives the newest real values
            expect(legend).to_have_count(4)
            expect(legend.nth(1)).to_contain_text("temperature_c")
            expect(legend.nth(1)).to_contain_text("60.000")
            expect(legend.nth(3)).to_contain_text("anomaly score")

            page.select_option("#device", "pump-0002")
            expect(box).to_have_attribute("data-device", "pump-0002", timeout=10_000)
            expect(box).to_have_attribute("data-points", "12")
            expect(page.locator("#metrics-status")).to_contain_text("12 readings")
            assert QUERY_KEY not in page.content()
            assert all(key == QUERY_KEY for _, _, key in query_api.requests)
            assert errors == []
        finally:
            browser.close()
