"""`python -m local.eventhubs` as a user runs it: prints its connection strings, serves, stops on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from azure.eventhub import EventHubProducerClient

ROOT = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.stack


def test_cli_serves_the_printed_connection_string_and_stops_on_sigterm(tmp_path):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "local.eventhubs",
            "--port",
            "0",
            "--data-dir",
            str(tmp_path / "data"),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: list[str] = []
    found = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "EntityPath=readings" in line:
                found.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert found.wait(20), "".join(lines)
        conn = next(line.strip() for line in lines if "EntityPath=readings" in line)
        assert re.fullmatch(
            r"Endpoint=sb://127\.0\.0\.1:\d+;SharedAccessKeyName=RootManageSharedAccessKey;"
            r"SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;EntityPath=readings",
            conn,
        )
        with EventHubProducerClient.from_connection_string(conn) as client:
            assert client.get_partition_ids() == ["0", "1", "2", "3"]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(20)
        reader.join(5)
        assert proc.stdout is not None
        proc.stdout.close()
    assert code == 0
    assert "stopping" in "".join(lines)


def test_cli_help_explains_itself():
    out = subprocess.run(
        [sys.executable, "-m", "local.eventhubs", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for flag in ("--config", "--port", "--data-dir", "--key", "--fsync", "--retention-hours"):
        assert flag in out


def test_a_runs_own_key_is_masked_in_the_printed_connection_string():
    from local.eventhubs.__main__ import _shown
    from local.eventhubs.server import DEFAULT_KEY

    conn = "Endpoint=sb://127.0.0.1:5672;SharedAccessKeyName=K;SharedAccessKey=s3cret-run-key;X=1"
    shown = _shown(conn, "s3cret-run-key")
    assert "s3cret-run-key" not in shown
    assert "SharedAccessKey=***;" in shown
    well_known = conn.replace("s3cret-run-key", DEFAULT_KEY)
    assert _shown(well_known, DEFAULT_KEY) == well_known  # the public default stays copyable
