"""The entry script served by Microsoft's inference server, over real HTTP on 127.0.0.1.

One server for the module: it takes about a second to start, and every test only posts to it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from model.detector import DetectorConfig
from model.failure import ARTIFACT_NAME
from model.score import MODEL_VERSION
from shared.microbatch import MicroBatcher, build_body, chunk_device
from shared.predictions import parse_device_result
from shared.readings import Reading
from shared.scoring import AmlClient
from tests.support.azmlinfsrv import serve

pytestmark = pytest.mark.stack

T0 = datetime(2026, 11, 27, 6, 0, tzinfo=UTC)
FAILURE_FIELDS = ("failure_probability", "maintenance_due")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serve() as url:
        yield url


def stamp(i: int) -> str:
    return (T0 + timedelta(seconds=10 * i)).isoformat().replace("+00:00", "Z")


def post(url: str, body: str | bytes) -> requests.Response:
    with requests.Session() as session:
        return session.post(
            f"{url}/score", data=body, headers={"Content-Type": "application/json"}, timeout=10
        )


def test_score_two_devices_answers_contract_shape(server: str) -> None:
    sent = {
        "pump-1": [
            {"timestamp": stamp(i), "metrics": {"rpm": 1500.0 + i, "temp": 60.0}} for i in range(5)
        ],
        "fan-2": [{"timestamp": stamp(i), "metrics": {"vibration": 0.2}} for i in range(3)],
    }
    body = {
        "contract": 1,
        "devices": [{"device_id": d, "state": None, "readings": rs} for d, rs in sent.items()],
    }
    resp = post(server, json.dumps(body))
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["model_version"] == MODEL_VERSION
    assert [d["device_id"] for d in doc["devices"]] == ["pump-1", "fan-2"]
    for device in doc["devices"]:
        readings = sent[device["device_id"]]
        assert isinstance(device["state"], dict)
        preds = device["predictions"]
        assert [p["timestamp"] for p in preds] == [r["timestamp"] for r in readings]
        for p in preds:
            assert set(p) == {
                "timestamp",
                "anomaly_score",
                "is_anomaly",
                "top_metric",
                *FAILURE_FIELDS,
            }
            assert 0.0 <= p["anomaly_score"] <= 1.0
            assert isinstance(p["is_anomaly"], bool)
            assert all(p[f] is None for f in FAILURE_FIELDS)


def test_score_contract_2_answers_in_columns_what_contract_1_answers(server: str) -> None:
    metrics = ["rpm", "temp"]
    values = {
        "pump-1": [[1500.0 + i, 60.0] for i in range(5)],
        "pump-2": [[1500.0, None], [None, 61.0], [1502, 61.5]],  # nulls: no value sent
        "idle-3": [],
    }
    columns = {
        "contract": 2,
        "devices": [
            {
                "device_id": d,
                "state": None,
                "timestamps": [stamp(i) for i in range(len(rows))],
                "metrics": metrics if rows else [],
                "values": rows,
            }
            for d, rows in values.items()
        ],
    }
    readings = {
        "contract": 1,
        "devices": [
            {
                "device_id": d,
                "state": None,
                "readings": [
                    {
                        "timestamp": stamp(i),
                        "metrics": {
                            m: v for m, v in zip(metrics, row, strict=True) if v is not None
                        },
                    }
                    for i, row in enumerate(rows)
                ],
            }
            for d, rows in values.items()
        ],
    }
    resp = post(server, json.dumps(columns))
    assert resp.status_code == 200, resp.text[:500]
    assert resp.headers["Content-Type"].startswith("application/json")
    doc = resp.json()
    want = post(server, json.dumps(readings)).json()
    assert doc["model_version"] == want["model_version"] == MODEL_VERSION
    assert [d["device_id"] for d in doc["devices"]] == list(values)
    for got, one in zip(doc["devices"], want["devices"], strict=True):
        assert got["state"] == one["state"]
        preds = got["predictions"]
        assert list(preds) == [
            "timestamp",
            "anomaly_score",
            "is_anomaly",
            "top_metric",
            *FAILURE_FIELDS,
        ]
        assert preds == {f: [p[f] for p in one["predictions"]] for f in preds}
    assert doc["devices"][0]["predictions"]["timestamp"] == [stamp(i) for i in range(5)]
    assert doc["devices"][2]["predictions"]["anomaly_score"] == []
    bad = {**columns, "devices": [{**columns["devices"][0], "metrics": ["rpm", "rpm"]}]}
    resp = post(server, json.dumps(bad))
    assert resp.status_code == 400
    assert resp.json() == {
        "error": "names must be distinct: 'rpm' repeats",
        "field": "devices[0].metrics",
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"contract": 99, "devices": []}', "contract"),
        (
            '{"contract": 1, "devices": [{"device_id": "d", "state": null, '
            '"readings": [{"timestamp": "yesterday", "metrics": {}}]}]}',
            "devices[0].readings[0].timestamp",
        ),
        ("not json", "$"),
    ],
)
def test_score_malformed_request_answers_400_naming_field(
    server: str, body: str, field: str
) -> None:
    resp = post(server, body)
    assert resp.status_code == 400
    assert resp.headers["Content-Type"].startswith("application/json")
    assert resp.json()["field"] == field


def fleet(devices: int, readings: int) -> dict[str, list[Reading]]:
    return {
        f"dev-{d}": [
            Reading(f"dev-{d}", T0 + timedelta(seconds=10 * i), {"rpm": 1500.0 + d, "temp": 60.0})
            for i in range(readings)
        ]
        for d in range(devices)
    }


def test_score_aml_client_answer_passes_parse_device_result(server: str) -> None:
    devices = fleet(3, 10)
    chunks = [chunk_device(d, rs, max_rows=100, max_bytes=1 << 20)[0] for d, rs in devices.items()]
    client = AmlClient(f"{server}/score", "unused-locally")
    try:
        doc = client.score(build_body(chunks, {}))
    finally:
        client.close()
    assert doc["model_version"] == MODEL_VERSION
    results = [
        parse_device_result(raw, devices[raw["device_id"]], doc["model_version"])
        for raw in doc["devices"]
    ]
    assert [r.device_id for r in results] == list(devices)
    for result in results:
        assert [p.timestamp for p in result.predictions] == [
            r.timestamp for r in devices[result.device_id]
        ]
        assert all(p.failure_probability is None for p in result.predictions)
        assert all(p.maintenance_due is None for p in result.predictions)


def test_score_micro_batcher_scores_through_server(server: str) -> None:
    devices = fleet(4, 30)
    # max_rows=50 forces several requests and two rounds per device, so the state the server
    # returned is sent back to it on the next request.
    batcher = MicroBatcher(AmlClient(f"{server}/score", "unused-locally"), max_rows=50)
    try:
        outcome = batcher.score(devices, {d: None for d in devices})
    finally:
        batcher.close()
        batcher.scorer.close()
    assert outcome.rejected == []
    assert outcome.model_version == MODEL_VERSION
    assert outcome.requests >= 3
    assert sorted(outcome.results) == sorted(devices)
    for device_id, result in outcome.results.items():
        assert [p.timestamp for p in result.predictions] == [
            r.timestamp for r in devices[device_id]
        ]
        assert all(0.0 <= p.anomaly_score <= 1.0 for p in result.predictions)
        assert result.state


def test_served_with_the_trained_artifact_a_warm_pump_gets_a_failure_probability() -> None:
    # The committed artifact, mounted the way Azure ML mounts a folder model
    # ($AZUREML_MODEL_DIR/<folder>/failure.json), scores a pump past its warm-up.
    artifact = Path(__file__).resolve().parents[2] / "model" / "artifacts" / "failure.json"
    steps = int((DetectorConfig().warmup_s + 2 * 3600) / 10)
    readings = [
        {
            "timestamp": stamp(i),
            "metrics": {
                "temperature_c": 48.0 + 0.2 * ((i * 7) % 5),
                "vibration_mm_s": 1.7 + 0.01 * ((i * 3) % 7),
                "pressure_kpa": 350.0 + (i * 11) % 9,
                "rpm": 2925.0 + (i * 5) % 11,
                "current_a": 30.5 + 0.1 * ((i * 13) % 6),
                "flow_m3h": 96.0 + (i * 17) % 5,
            },
        }
        for i in range(steps)
    ]
    body = json.dumps(
        {
            "contract": 1,
            "devices": [{"device_id": "pump-0001", "state": None, "readings": readings}],
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "artifacts").mkdir()
        shutil.copy(artifact, Path(tmp) / "artifacts" / ARTIFACT_NAME)
        with serve(model_dir=tmp) as url, requests.Session() as session:
            resp = session.post(
                f"{url}/score",
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=60,
            )
    assert resp.status_code == 200, resp.text[:500]
    preds = resp.json()["devices"][0]["predictions"]
    assert preds[0]["failure_probability"] is None  # cold start: no trend yet
    last = preds[-1]
    assert isinstance(last["failure_probability"], float)
    assert 0.0 <= last["failure_probability"] <= 1.0
    assert isinstance(last["maintenance_due"], bool)
