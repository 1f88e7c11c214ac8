"""`make demo`'s orchestration, end to end: the whole stack on free ports, a small fleet.

One stack is shared by the module's tests (it takes ~10 s to start and ~5 s to stop): the
browser test watches the dashboard while the fleet is sending, the end-to-end test then waits
for the pipeline to drain and checks every accepted reading was stored exactly once, that the
query function returns them and that both score hosts did part of the work.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from playwright.sync_api import expect, sync_playwright

from fleetscore.__main__ import main as fleetscore_main
from fleetscore.query import QueryClient
from local.demo import DemoConfig, FleetRun, Ports, PredictionsTable, SendResult, Stack
from local.demo.processes import free_ports
from local.demo.summary import summarize, wait_drained
from tests.support.waiting import wait_until

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
DEVICES = 10
SEND_SECONDS = 25.0


@dataclass
class Run:
    stack: Stack
    fleet: FleetRun
    thread: threading.Thread
    result: list[SendResult] = field(default_factory=list)

    def finished(self) -> SendResult:
        self.thread.join(timeout=SEND_SECONDS + 60)
        assert not self.thread.is_alive(), "the simulator did not finish"
        assert self.result, "the simulator raised; see the captured output"
        return self.result[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Iterator[Run]:
    ports = Ports(*free_ports(len(fields(Ports))))
    config = DemoConfig(ports=ports, workdir=tmp_path_factory.mktemp("demo"), score_hosts=2)
    stack = Stack(config)
    thread = None
    try:
        stack.start()
        # 10 devices, a reading each per 5 simulated minutes, 3000x: 100 readings/s for 25 s,
        # ~21 simulated hours, so the detector's 12-hour warm-up ends and anomalies show.
        fleet = FleetRun(
            stack.ingest_url,
            stack.function_key,
            devices=DEVICES,
            speed=3000,
            interval_s=300,
            duration_s=SEND_SECONDS,
        )
        holder: list[SendResult] = []
        thread = threading.Thread(target=lambda: holder.append(fleet.send()), daemon=True)
        thread.start()
        yield Run(stack, fleet, thread, holder)
    finally:
        if thread is not None:
            thread.join(timeout=SEND_SECONDS + 60)
        stack.stop()


@pytest.mark.stack
@pytest.mark.azurite
@pytest.mark.browser
def test_dashboard_tiles_change_while_the_fleet_streams(run):
    assert CHROMIUM.exists(), "Debian's chromium is missing: `make setup` installs it"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(run.stack.dashboard_url)
            expect(page.locator("#status")).to_contain_text("live", timeout=10_000)
            readings = page.locator("#kpi-readings")
            first = readings.inner_text()
            expect(readings).not_to_have_text(first, timeout=20_000)  # a window arrived live
            second = readings.inner_text()
            assert float(second.replace(",", "")) > 0
            expect(page.locator("#fleet tbody tr")).to_have_count(DEVICES, timeout=20_000)
            expect(readings).not_to_have_text(second, timeout=20_000)  # and it keeps moving
            # The readings chart: the selected device's stored metrics, via the query function.
            selected = page.locator("#device").input_value()
            assert selected
            metrics = page.locator(f'#metrics-chart[data-device="{selected}"]')
            expect(metrics.locator(".uplot")).to_have_count(1, timeout=20_000)
            expect(metrics).not_to_have_attribute("data-points", "0", timeout=20_000)
            assert int(metrics.get_attribute("data-points")) > 0
            legend = page.locator("#metrics-chart .u-legend .u-series")
            assert legend.count() >= 3  # time, at least one metric, the anomaly score
            expect(legend.last).to_contain_text("anomaly score")
            assert errors == []
            shot = os.environ.get("FLEETSCORE_SCREENSHOT")
            if shot:  # the picture for the README: after the whole run, with anomalies if any
                run.finished()
                with contextlib.suppress(PlaywrightTimeoutError):
                    page.locator("#feed li").first.wait_for(timeout=15_000)
                page.screenshot(path=str(ROOT / shot), full_page=True)
        finally:
            browser.close()


@pytest.mark.stack
@pytest.mark.azurite
def test_every_accepted_reading_is_stored_once_queryable_and_both_score_hosts_worked(run, capsys):
    sent = run.finished()
    assert sent.fatal is None
    assert sent.exit_code == 0
    assert sent.accepted == sent.sent == len(sent.accepted_at) > 1000
    table = PredictionsTable(run.stack.storage_connection)
    try:
        drained, rows = wait_drained(
            table, set(sent.accepted_at), timeout=60, check=run.stack.processes.check_alive
        )
    finally:
        table.close()
    assert drained
    summary = summarize(sent=sent.sent, accepted_at=sent.accepted_at, rows=rows)
    assert (summary.accepted, summary.stored, summary.duplicates) == (sent.accepted,) * 2 + (0,)
    assert sorted((r.device_id, r.row_key) for r in rows) == sorted(sent.accepted_at)
    assert summary.latency_p50_s is not None
    assert summary.latency_p50_s < 30

    # The query function returns each device's readings, over HTTP with the function key.
    by_device: dict[str, set[str]] = {}
    for device, key in sent.accepted_at:
        by_device.setdefault(device, set()).add(key)
    assert len(by_device) == DEVICES
    client = QueryClient(run.stack.api_url, run.stack.function_key)
    try:
        for device, keys in by_device.items():
            items = client.list_predictions(
                device, start=_hours_from_now(-24), end=_hours_from_now(1), limit=5000
            )
            stamps = [i["timestamp"] for i in items]
            assert len(stamps) == len(set(stamps)) == len(keys)
    finally:
        client.close()
    device = sorted(by_device)[0]
    argv = ["query", "--settings", str(run.stack.settings_path), "devices", device, "--limit", "3"]
    assert fleetscore_main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert all(f'"device_id":"{device}"' in line for line in lines)

    # Two score hosts split the four partitions; each ran some of them.
    done = run.stack.processed_partitions()
    assert len(done) == 2
    assert all(done.values()), done
    assert set().union(*done.values()) == {"0", "1", "2", "3"}


def _hours_from_now(hours: float) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.stack
@pytest.mark.azurite
def test_ctrl_c_stops_every_process_the_demo_started(tmp_path):
    ports = [f"--{f.name.replace('_', '-')}-port" for f in fields(Ports)]
    argv = [sys.executable, "-m", "local.demo", "--workdir", str(tmp_path), "--devices", "2"]
    argv += [a for p in ports for a in (p, "0")]
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        assert wait_until(lambda: any("==> sending" in x for x in lines), timeout=60), lines
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            for pid in re.findall(r"started \S+ \(pid (\d+)\)", "".join(lines)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(int(pid), signal.SIGKILL)  # each child leads its own group
    reader.join(timeout=10)
    proc.stdout.close()
    out = "".join(lines)
    assert "interrupted: stopping the stack" in out
    assert "stopped 7 processes it started: " in out
    pids = [int(p) for p in re.findall(r"started \S+ \(pid (\d+)\)", out)]
    assert len(pids) == 7
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert "SUMMARY" not in out
