"""The security probes against a real local stack, and `scan_logs` on its own.

One stack is shared by the module (score_hosts=1 keeps it light). Before any probe it carries
some normal traffic, so a probe that leaked rows would have rows to leak and the logs hold what
a working pipeline writes; the log scan runs after every probe.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta

import pytest
import requests

from local.chaos.security import (
    Leak,
    Probe,
    probe_all,
    probe_dashboard_keys,
    probe_declared_oversize,
    probe_eventhubs_wrong_key,
    probe_ingest_keys,
    probe_oversized_bodies,
    probe_query_injection,
    probe_query_keys,
    scan_logs,
    stack_secrets,
)
from local.demo import DemoConfig, Ports, PredictionsTable, Stack
from local.demo.processes import free_ports
from shared.readings import format_timestamp, row_key
from tests.support.waiting import wait_until

DEVICES = ("sec-pump-0001", "sec-pump-0002")
READINGS_PER_DEVICE = 3


@dataclass
class Seeded:
    stack: Stack
    stored: set[tuple[str, str]]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> Iterator[Seeded]:
    ports = Ports(*free_ports(len(fields(Ports))))
    config = DemoConfig(ports=ports, workdir=tmp_path_factory.mktemp("security"), score_hosts=1)
    stack = Stack(config)
    try:
        stack.start()
        yield Seeded(stack, _send_normal_traffic(stack))
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def all_probes(seeded) -> list[Probe]:
    return probe_all(seeded.stack)


def _send_normal_traffic(stack: Stack) -> set[tuple[str, str]]:
    """A few valid readings with the key; returns once the Predictions table holds them all."""
    now = datetime.now(UTC).replace(microsecond=0)
    stamps = [now - timedelta(minutes=5 * i) for i in range(1, READINGS_PER_DEVICE + 1)]
    readings = [
        {
            "device_id": device,
            "timestamp": format_timestamp(ts),
            "metrics": {"temperature_c": 70.0 + i, "vibration_mm_s": 3.0},
        }
        for device in DEVICES
        for i, ts in enumerate(stamps)
    ]
    answer = requests.post(
        stack.ingest_url,
        json={"readings": readings},
        headers={"x-functions-key": stack.function_key},
        timeout=10,
    )
    assert (answer.status_code, answer.json()) == (
        202,
        {"accepted": len(readings), "events": len(DEVICES)},
    )
    wanted = {(device, row_key(ts)) for device in DEVICES for ts in stamps}
    table = PredictionsTable(stack.storage_connection)
    try:

        def stored() -> bool:
            stack.processes.check_alive()
            return wanted <= {(r.device_id, r.row_key) for r in table.rows()}

        assert wait_until(stored, timeout=60, interval=0.2), "the readings were not scored"
    finally:
        table.close()
    return wanted


# --- one test per probe ------------------------------------------------------------------------


@pytest.mark.stack
@pytest.mark.azurite
def test_ingest_without_the_function_key_is_401(seeded):
    probe = probe_ingest_keys(seeded.stack)
    assert probe.ok, probe.detail


@pytest.mark.stack
@pytest.mark.azurite
def test_query_routes_without_the_function_key_are_401(seeded):
    probe = probe_query_keys(seeded.stack)
    assert probe.ok, probe.detail


@pytest.mark.stack
@pytest.mark.azurite
def test_query_injection_and_path_tricks_are_4xx_without_rows(seeded):
    probe = probe_query_injection(seeded.stack)
    assert probe.ok, probe.detail
    assert seeded.stored  # there were rows to leak


@pytest.mark.stack
@pytest.mark.azurite
def test_ingest_bodies_over_one_mib_are_413(seeded):
    probe = probe_oversized_bodies(seeded.stack)
    assert probe.ok, probe.detail


@pytest.mark.stack
@pytest.mark.azurite
def test_a_declared_50_mb_ingest_body_is_413_before_any_byte_is_sent(seeded):
    probe = probe_declared_oversize(seeded.stack)
    assert probe.ok, probe.detail


@pytest.mark.stack
@pytest.mark.azurite
def test_event_hubs_refuses_a_sas_token_signed_with_a_wrong_key(seeded):
    probe = probe_eventhubs_wrong_key(seeded.stack)
    assert probe.ok, probe.detail


@pytest.mark.stack
@pytest.mark.azurite
def test_dashboard_push_api_refuses_rows_without_its_key(seeded):
    probe = probe_dashboard_keys(seeded.stack)
    assert probe.ok, probe.detail


@pytest.mark.stack
@pytest.mark.azurite
def test_no_answer_of_any_probe_carries_a_secret(seeded, all_probes):
    by_name = {p.name: p for p in all_probes}
    answers = by_name["answers never carry a secret"]
    assert answers.ok, answers.detail
    assert len(all_probes) == 8
    secrets = stack_secrets(seeded.stack).values()
    assert not [p for p in all_probes for s in secrets if s in p.detail or s in p.name]


# --- logs ------------------------------------------------------------------------------------


@pytest.mark.stack
@pytest.mark.azurite
def test_no_log_of_the_stack_holds_a_secret_after_traffic_and_probes(seeded, all_probes):
    logs = sorted(seeded.stack.config.logs.glob("*.log"))
    names = {p.stem for p in logs}
    assert {"http-host", "score-host-1", "eventhubs", "dashboard", "azurite"} <= names
    scored = (seeded.stack.config.logs / "score-host-1.log").read_text(errors="replace")
    assert "Executed 'Functions.score_function' (Succeeded" in scored  # normal traffic ran
    assert scan_logs(logs, stack_secrets(seeded.stack)) == []


def test_scan_logs_names_the_secret_and_the_line_never_the_value(tmp_path):
    key = "fk-3b9c1d2e4f5a6b7c8d9e"
    sas = "sas-0a1b2c3d4e5f"
    first = tmp_path / "http-host.log"
    first.write_text(
        "INFO started\n"
        f'INFO 127.0.0.1 "POST /api/readings?code={key}" 202 ingest_function\n'
        "INFO Endpoint=sb://127.0.0.1:5672;SharedAccessKeyName=Root;SharedAccessKey=;x\n"
        "INFO AccountKey=*** and SharedAccessKey=[redacted]\n"
    )
    second = tmp_path / "score-host-1.log"
    second.write_text(
        "DEBUG DefaultEndpointsProtocol=http;AccountName=a;AccountKey=c2VjcmV0;\n"
        f"ERROR connect failed: Endpoint=sb://h;SharedAccessKey={sas};EntityPath=readings\n"
        "DEBUG token SharedAccessSignature sr=sb%3A%2F%2Fh&sig=AbC%2Bd%3D&se=1&skn=Root\n"
        "INFO sig=*** se=1\n"
    )
    leaks = scan_logs([first, second], {"function key": key, "Event Hubs SAS key": sas})
    assert leaks == [
        Leak(first, 2, "function key"),
        Leak(second, 1, "AccountKey= with a value"),
        Leak(second, 2, "Event Hubs SAS key"),
        Leak(second, 2, "SharedAccessKey= with a value"),
        Leak(second, 3, "sig= with a value"),
    ]
    shown = json.dumps([[str(x.path), x.line_number, x.what] for x in leaks])
    assert key not in shown
    assert sas not in shown
    assert "c2VjcmV0" not in shown
    assert "AbC" not in shown
