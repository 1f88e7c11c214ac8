"""The demo's parts that need no stack: ports, failing services, the summary, the CLIs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from contextlib import suppress
from pathlib import Path

import pytest

from fleetscore.__main__ import main as fleetscore_main
from local.demo.__main__ import main as demo_main
from local.demo.processes import (
    PortTakenError,
    ProcessGroup,
    Service,
    ServiceError,
    check_ports_free,
    free_port,
)
from local.demo.summary import PredictionRow, summarize
from local.demo.traffic import AcceptLog
from tests.support.waiting import wait_until


def test_check_ports_free_names_a_taken_port_and_what_it_was_for():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        with pytest.raises(PortTakenError) as caught:
            check_ports_free({"dashboard": free_port(), "http": taken})
    assert f"port {taken} (http)" in str(caught.value)
    assert "dashboard" not in str(caught.value)


def test_a_service_that_exits_is_named_with_the_tail_of_its_log(tmp_path):
    group = ProcessGroup(tmp_path / "logs")
    script = "import sys; print('line one'); print('cannot bind 127.0.0.1:1'); sys.exit(3)"
    broken = Service("broken", [sys.executable, "-c", script], ready=lambda: False, timeout=10)
    with pytest.raises(ServiceError) as caught:
        group.start([broken])
    message = str(caught.value)
    assert message.startswith("broken exited with code 3")
    assert "cannot bind 127.0.0.1:1" in message
    assert group.stop_all() == []  # it has exited; nothing left to stop


def test_a_service_that_never_gets_healthy_is_stopped_after_its_deadline(tmp_path):
    group = ProcessGroup(tmp_path / "logs")
    # A service that starts and then hangs: blocks forever until it is stopped.
    script = "import threading; print('waiting', flush=True); threading.Event().wait()"
    slow = Service("slow", [sys.executable, "-c", script], ready=lambda: False, timeout=0.5)
    with pytest.raises(ServiceError, match=r"(?s)slow was not healthy within 0.5s.*waiting"):
        group.start([slow])
    assert group.stop_all(grace=5) == ["slow"]


def test_accept_log_snapshot_is_a_copy_of_the_first_accept_times():
    times = iter([100.0, 101.0])
    accepts = AcceptLog(clock=lambda: next(times))
    reading = {"device_id": "pump-0000", "timestamp": "2026-11-27T07:00:00.000Z", "metrics": {}}
    accepts.note(json.dumps({"readings": [reading]}).encode())
    snapshot = accepts.snapshot()
    accepts.note(json.dumps({"readings": [reading, {**reading, "device_id": "fan-1"}]}).encode())
    assert snapshot == {("pump-0000", "20261127T070000.000Z"): 100.0}
    assert accepts.snapshot() == {
        ("pump-0000", "20261127T070000.000Z"): 100.0,  # the first 202 wins
        ("fan-1", "20261127T070000.000Z"): 101.0,
    }


# The services below run `before`, create the file argv[1] (their ready probe), then wait until
# the file argv[2] exists (forever without one) and exit: each step is the test's to trigger.
_SERVICE = """
import os, pathlib, subprocess, sys, threading
{before}
pathlib.Path(sys.argv[1]).touch()
if len(sys.argv) < 3:
    threading.Event().wait()
while not pathlib.Path(sys.argv[2]).exists():
    threading.Event().wait(0.01)
"""


def _file_service(name: str, up: Path, *, before: str = "", until: Path | None = None) -> Service:
    argv = [sys.executable, "-c", _SERVICE.format(before=before), str(up)]
    return Service(name, argv + ([str(until)] if until else []), ready=up.exists, timeout=10)


def test_start_again_restarts_a_service_that_exited_on_its_own(tmp_path):
    group = ProcessGroup(tmp_path / "logs")
    up, release = tmp_path / "up", tmp_path / "release"
    group.start([_file_service("once", up, before="print('life')", until=release)])
    release.touch()
    assert wait_until(lambda: not group.is_running("once"))
    assert group.names == ["once"]  # exited, but still listed
    up.unlink()
    release.unlink()
    group.start_again("once")
    assert group.names == ["once"]  # listed once, not twice
    assert group.is_running("once")
    assert group.log_path("once").read_text().count("life") == 2
    assert group.stop_all(grace=5) == ["once"]


def test_start_again_refuses_a_running_or_unknown_service(tmp_path):
    group = ProcessGroup(tmp_path / "logs")
    group.start([_file_service("hang", tmp_path / "up")])
    with pytest.raises(ServiceError, match="hang is still running"):
        group.start_again("hang")
    with pytest.raises(ServiceError, match="ghost was never started"):
        group.start_again("ghost")
    assert group.stop_all(grace=5) == ["hang"]


def test_kill_forgets_the_service_even_if_the_wait_fails(tmp_path, monkeypatch):
    group = ProcessGroup(tmp_path / "logs")
    group.start([_file_service("stuck", tmp_path / "up")])
    proc = group._running[0].proc
    real_wait = proc.wait

    def wait_that_times_out(timeout: float | None = None) -> int:
        raise subprocess.TimeoutExpired(proc.args, timeout or 0)

    monkeypatch.setattr(proc, "wait", wait_that_times_out)
    with pytest.raises(subprocess.TimeoutExpired):
        group.kill("stuck")
    assert group.names == []
    monkeypatch.setattr(proc, "wait", real_wait)
    assert proc.wait(timeout=10) == -signal.SIGKILL


_CHILD = (
    "import os, pathlib, sys, threading; p = pathlib.Path(sys.argv[1]); "
    "t = p.with_suffix('.tmp'); t.write_text(str(os.getpid())); t.rename(p); "
    "threading.Event().wait()"
)


def test_stop_signals_the_children_of_a_leader_that_has_exited(tmp_path):
    group = ProcessGroup(tmp_path / "logs")
    pid_file, release = tmp_path / "child.pid", tmp_path / "release"
    # The leader starts a child (in its process group), then exits; the child keeps running.
    before = (
        f"subprocess.Popen([sys.executable, '-c', {_CHILD!r}, {str(pid_file)!r}])\n"
        f"while not pathlib.Path({str(pid_file)!r}).exists():\n"
        "    threading.Event().wait(0.01)"
    )
    group.start([_file_service("parent", tmp_path / "up", before=before, until=release)])
    pid = int(pid_file.read_text())
    try:
        release.touch()
        assert wait_until(lambda: not group.is_running("parent"))
        assert _alive(pid)
        assert group.stop(["parent"], grace=5) == []  # the leader had exited ...
        assert wait_until(lambda: not _alive(pid))  # ... but its group was still signalled
    finally:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie counts as gone: it is only waiting for its parent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def row(device: str, key: str, ts: str, written: float, anomaly: bool = False) -> PredictionRow:
    return PredictionRow(device, key, ts, written, anomaly)


def test_summarize_counts_stored_duplicates_anomalies_and_latency():
    accepted = {
        ("pump-0000", "20261127T070000.000Z"): 100.0,
        ("pump-0000", "20261127T070030.000Z"): 100.0,
        ("fan-0001", "20261127T070000.000Z"): 101.0,
    }
    rows = [
        row("pump-0000", "20261127T070000.000Z", "2026-11-27T07:00:00.000Z", 101.0, True),
        row("pump-0000", "20261127T070030.000Z", "2026-11-27T07:00:30.000Z", 103.0),
        # the same reading under a second key, and a row for no accepted reading
        row("pump-0000", "20261127T070030.000Z", "2026-11-27T07:00:30.000+00:00", 103.0),
        row("fan-0001", "20261127T080000.000Z", "2026-11-27T08:00:00.000Z", 104.0),
    ]
    summary = summarize(sent=4, accepted_at=accepted, rows=rows, scored=5)
    assert (summary.sent, summary.accepted, summary.stored, summary.duplicates) == (4, 3, 2, 2)
    assert summary.anomalies == 1
    assert (summary.latency_p50_s, summary.latency_p99_s) == (1.0, 3.0)
    assert not summary.ok
    line = summary.line()
    assert line.startswith("SUMMARY {")
    assert json.loads(line.removeprefix("SUMMARY ")) == {
        "sent": 4,
        "accepted": 3,
        "stored": 2,
        "duplicates": 2,
        "anomalies": 1,
        "latency_p50_s": 1.0,
        "latency_p99_s": 3.0,
    }


def test_demo_help_names_its_options(capsys):
    with pytest.raises(SystemExit) as exited:
        demo_main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--duration", "--devices", "--score-hosts", "--http-port", "--dashboard-port"):
        assert flag in out
    assert "SUMMARY" in out


def test_demo_refuses_a_taken_port_before_starting_anything(capsys, tmp_path, monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        ports = [f"--{n}-port" for n in ("dashboard", "aml", "eventhubs")]
        ports += [f"--azurite-{n}-port" for n in ("blob", "queue", "table")]
        argv = ["--http-port", str(taken), "--workdir", str(tmp_path)]
        argv += [a for p in ports for a in (p, "0")]
        assert demo_main(argv) == 2
    err = capsys.readouterr().err
    assert f"port {taken} (http)" in err


def test_fleetscore_help_shows_the_query_commands(capsys):
    with pytest.raises(SystemExit):
        fleetscore_main(["query", "--help"])
    out = capsys.readouterr().out
    assert "devices" in out
    assert "anomalies" in out
    assert "python -m fleetscore query devices pump-0000" in out


def test_fleetscore_query_without_a_key_or_settings_says_how_to_get_one(
    capsys, tmp_path, monkeypatch
):
    monkeypatch.delenv("FLEETSCORE_KEY", raising=False)
    monkeypatch.delenv("FLEETSCORE_API_URL", raising=False)
    argv = ["query", "--settings", str(tmp_path / "none.json"), "anomalies", "--date", "2026-11-27"]
    assert fleetscore_main(argv) == 1
    assert "FLEETSCORE_KEY" in capsys.readouterr().err


class FakeResponse:
    def __init__(self, status: int, body: dict):
        self.status_code, self._body, self.text = status, body, json.dumps(body)

    def json(self) -> dict:
        return self._body


class FakeSession:
    """Answers like the query function: pages of 2 with a continuation token."""

    def __init__(self, items: list[dict], status: int = 200):
        self.items, self.status, self.calls = items, status, []

    def get(self, url, *, params, headers, timeout):
        self.calls.append((url, dict(params), headers))
        if self.status != 200:
            return FakeResponse(self.status, {"error": "validation", "details": []})
        start = int(params.get("continuation", "0"))
        size = min(2, int(params["limit"]))
        page = self.items[start : start + size]
        more = start + size < len(self.items)
        return FakeResponse(
            200, {"items": page, "continuation": str(start + size) if more else None}
        )

    def close(self):
        pass


def test_query_client_follows_continuations_up_to_the_limit_with_the_key():
    from fleetscore.query import QueryClient

    items = [{"timestamp": f"2026-11-27T07:00:0{i}.000Z"} for i in range(5)]
    session = FakeSession(items)
    client = QueryClient("http://127.0.0.1:1/api/", "k3y", session=session)
    assert client.list_predictions("pump 1", start="2026-11-27T07:00:00Z", limit=3) == items[:3]
    assert [c[0] for c in session.calls] == [
        "http://127.0.0.1:1/api/devices/pump%201/predictions"
    ] * 2
    assert session.calls[0][1] == {"order": "asc", "from": "2026-11-27T07:00:00Z", "limit": "3"}
    assert session.calls[1][1]["continuation"] == "2"
    assert session.calls[1][1]["limit"] == "1"
    assert all(c[2] == {"x-functions-key": "k3y"} for c in session.calls)
    assert client.list_anomalies("2026-11-27", limit=100) == items


def test_query_client_reports_a_refusal_with_the_service_answer():
    from fleetscore.query import QueryClient, QueryError

    client = QueryClient("http://127.0.0.1:1/api", "k", session=FakeSession([], status=400))
    with pytest.raises(QueryError, match=r"HTTP 400: .*validation"):
        client.list_anomalies("yesterday")


@pytest.mark.azurite
def test_predictions_table_reads_predictions_not_the_state_rows_beside_them(
    table_store, azurite_tables
):
    from datetime import UTC, datetime, timedelta

    from local.demo.summary import PredictionsTable
    from shared.predictions import Prediction
    from shared.states import DeviceWrite

    t0 = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
    writes = [
        DeviceWrite(
            device,
            [
                Prediction(device, t0 + timedelta(seconds=i), 0.1, False, None, None, None, "m")
                for i in range(3)
            ],
            {"seen": 3},
            None,
        )
        for device in ("a", "b")
    ]
    assert list(table_store.write_devices(writes, model_version="m", now=t0).etags) == ["a", "b"]
    table = PredictionsTable(azurite_tables, table_store.table_name("Predictions"))
    try:
        rows = table.rows()
    finally:
        table.close()
    assert sorted((r.device_id, r.reading_time) for r in rows) == [
        (d, f"2026-11-27T07:00:0{i}.000Z") for d in ("a", "b") for i in range(3)
    ]
