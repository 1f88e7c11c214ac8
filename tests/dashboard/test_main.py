from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import requests

from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


def test_cli_help_lists_the_options():
    out = subprocess.run(
        [sys.executable, "-m", "dashboard", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for option in ("--port", "--db", "--key", "--interval", "--query-url", "--query-key"):
        assert option in out


def test_cli_refuses_a_query_url_without_a_key():
    env = {k: v for k, v in os.environ.items() if k != "DASHBOARD_QUERY_KEY"}
    done = subprocess.run(
        [sys.executable, "-m", "dashboard", "--db", ":memory:", "--query-url", "http://x/api"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 2
    assert "--query-url needs --query-key or $DASHBOARD_QUERY_KEY" in done.stderr


def test_cli_logs_its_url_serves_healthz_and_stops_on_sigterm(tmp_path):
    db = tmp_path / "cli.sqlite3"
    env = {**os.environ, "DASHBOARD_KEY": "from-env", "DASHBOARD_QUERY_KEY": "query-from-env"}
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "dashboard", "--port", "0", "--db", str(db)),
            *("--query-url", "http://127.0.0.1:9/api"),
        ],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        assert wait_until(lambda: any("serving http://" in line for line in lines), timeout=15)
        url = re.search(r"serving (http://127\.0\.0\.1:\d+)/", "".join(lines)).group(1)
        assert requests.get(f"{url}/healthz", timeout=5).status_code == 200
        listed = requests.get(
            f"{url}/v1.0/myorg/datasets", headers={"Authorization": "Bearer from-env"}, timeout=5
        )
        assert [d["name"] for d in listed.json()["value"]] == ["fleetscore"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        reader.join(5)
        proc.stderr.close()
    assert db.exists()
    assert "dashboard stopped" in "".join(lines)
    assert "from-env" not in "".join(lines)  # neither key is logged
    assert "history from http://127.0.0.1:9/api" in "".join(lines)


def test_cli_says_when_the_port_is_taken(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "dashboard", "--port", str(port), "--db", ":memory:"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=20,
        )
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
