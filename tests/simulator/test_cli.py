"""`python -m simulator`: help, configuration errors, and a whole run with a fake fleet module."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import types
from pathlib import Path

import pytest

import simulator.__main__ as cli
import tests.simulator.test_client as support
import tests.simulator.test_run as fakes

ROOT = Path(__file__).resolve().parents[2]


def fake_fleet_module() -> types.ModuleType:
    module = types.ModuleType("simulator.fleet")

    def config(*, devices: int, seed: int, interval_s: float) -> types.SimpleNamespace:
        return types.SimpleNamespace(devices=devices, seed=seed, interval_s=interval_s)

    module.FleetConfig = config
    module.Fleet = lambda cfg, *, start: fakes.FakeFleet(
        cfg.devices, start=start, interval_s=cfg.interval_s
    )
    return module


@pytest.fixture
def fake_fleet(monkeypatch) -> None:
    real = cli._module
    monkeypatch.setattr(
        cli, "_module", lambda name: fake_fleet_module() if name == "fleet" else real(name)
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_help_from_the_module_entry_point():
    done = subprocess.run(
        [sys.executable, "-m", "simulator", "run", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0
    assert "FLEETSCORE_FUNCTION_KEY" in done.stdout
    assert "--speed SPEED" in done.stdout
    assert "(default: 200)" in done.stdout
    assert "examples:" in done.stdout


def test_cli_top_level_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("run", "generate", "plot"))


def test_cli_run_without_a_key_fails_clearly(capsys, monkeypatch):
    monkeypatch.delenv(cli.KEY_ENV, raising=False)
    assert cli.main(["run", "--url", "http://127.0.0.1:9/api/readings"]) == 2
    assert "no function key: pass --key or set FLEETSCORE_FUNCTION_KEY" in capsys.readouterr().err


def test_cli_run_unreachable_url_fails_fast(capsys, fake_fleet):
    url = f"http://127.0.0.1:{free_port()}/api/readings"
    assert cli.main(["run", "--url", url, "--key", "k", "--timeout", "1"]) == 2
    assert "cannot reach 127.0.0.1" in capsys.readouterr().err


def test_cli_run_refuses_a_start_older_than_seven_days(capsys, fake_fleet):
    argv = ["run", "--url", "http://127.0.0.1:9/x", "--key", "k", "--speed", "3600"]
    assert cli.main([*argv, "--duration", "3600"]) == 2
    assert "--speed 168 or less" in capsys.readouterr().err


def test_cli_run_without_the_physics_says_so(capsys, monkeypatch):
    real = cli._module
    monkeypatch.setattr(cli, "_module", lambda name: None if name == "fleet" else real(name))
    assert cli.main(["run", "--url", "http://127.0.0.1:9/x", "--key", "k"]) == 2
    assert "needs simulator/fleet.py" in capsys.readouterr().err


def test_cli_rejects_a_bad_fraction_out_of_range(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", "--url", "http://x", "--bad-fraction", "1.5"])
    assert exit_.value.code == 2
    assert "must be within 0..1" in capsys.readouterr().err


def test_cli_run_end_to_end_writes_the_manifest(tmp_path, capsys, monkeypatch, fake_fleet):
    monkeypatch.setenv(cli.KEY_ENV, support.KEY)
    manifest = tmp_path / "out" / "manifest.json"
    with support.FakeIngest(["503"]) as server:
        argv = ["run", "--url", server.url, "--devices", "4", "--speed", "600"]
        code = cli.main([*argv, "--duration", "0.5", "--manifest", str(manifest), "--quiet"])
        stored = server.manifest()
    assert code == 0
    assert json.loads(manifest.read_text()) == stored
    assert stored["accepted"] == 4 * 30
    assert "ok: every reading sent was confirmed" in capsys.readouterr().err


def test_cli_delegated_command_missing_says_so(capsys, monkeypatch):
    monkeypatch.setattr(cli, "_module", lambda name: None)
    assert cli.main(["plot", "--device", "x"]) == 2
    assert "simulator/plot.py is missing" in capsys.readouterr().err


def test_cli_run_with_a_rate_below_the_fleet_pace_warns_and_holds_it(
    capsys, monkeypatch, fake_fleet
):
    monkeypatch.setenv(cli.KEY_ENV, support.KEY)
    with support.FakeIngest() as server:
        argv = ["run", "--url", server.url, "--devices", "4", "--speed", "600", "--quiet"]
        code = cli.main([*argv, "--duration", "0.5", "--rate", "200", "--batch-size", "20"])
        stored = server.manifest()
    err = capsys.readouterr().err
    assert code == 0
    assert stored["accepted"] == 120
    assert "--rate 200 is below the fleet's 240 readings/s" in err
    achieved = re.search(r"\(([\d,]+) readings/s\)", err)
    assert achieved is not None
    assert float(achieved[1].replace(",", "")) == pytest.approx(200, rel=0.10)
