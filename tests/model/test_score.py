"""The AML entry script's contract: shapes, order, nulls, bad input, state round trip."""

from __future__ import annotations

import gc
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from model import score
from model.detector import DetectorConfig
from model.score import MODEL_VERSION, BadRequest, init, run, score_request
from model.state import load_state
from shared.predictions import MAX_STATE_CHARS, parse_device_result
from shared.readings import validate_reading
from simulator.fleet import Fleet, FleetConfig, kind_metrics

START = datetime(2026, 1, 1, tzinfo=UTC)


def fleet_readings(devices: int, steps: int, seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    fleet = Fleet(FleetConfig(devices=devices, seed=seed, anomaly_per_day=6.0), start=START)
    per_device: dict[str, list[dict[str, Any]]] = {d: [] for d in fleet.device_ids}
    for _ in range(steps):
        for r in fleet.step():
            per_device[r["device_id"]].append(
                {"timestamp": r["timestamp"], "metrics": r["metrics"]}
            )
    return per_device


def request(per_device: dict[str, list[dict[str, Any]]], states: dict | None = None) -> str:
    states = states or {}
    devices = [
        {"device_id": d, "state": states.get(d), "readings": readings}
        for d, readings in per_device.items()
    ]
    return json.dumps({"contract": 1, "devices": devices})


def test_run_answers_one_prediction_per_reading_in_order() -> None:
    init()
    per_device = fleet_readings(3, 120)
    out = run(request(per_device))
    json.dumps(out, allow_nan=False)
    assert out["model_version"] == MODEL_VERSION
    assert [d["device_id"] for d in out["devices"]] == list(per_device)
    for device in out["devices"]:
        sent = per_device[device["device_id"]]
        preds = device["predictions"]
        assert [p["timestamp"] for p in preds] == [r["timestamp"] for r in sent]
        for p in preds:
            assert set(p) == {
                "timestamp",
                "anomaly_score",
                "is_anomaly",
                "top_metric",
                "failure_probability",
                "maintenance_due",
            }
            assert p["failure_probability"] is None
            assert p["maintenance_due"] is None
            assert 0.0 <= p["anomaly_score"] <= 1.0
            assert p["is_anomaly"] is (p["anomaly_score"] >= 0.9)
        assert device["state"]["v"] == 4


def test_run_response_passes_the_pipeline_validator() -> None:
    per_device = fleet_readings(3, 200, seed=1)
    out = run(request(per_device))
    for device in out["devices"]:
        readings = []
        for r in per_device[device["device_id"]]:
            reading, errors = validate_reading({"device_id": device["device_id"], **r})
            assert errors == []
            readings.append(reading)
        result = parse_device_result(device, readings, MODEL_VERSION)
        assert len(result.predictions) == len(readings)
        assert len(json.dumps(device["state"])) < MAX_STATE_CHARS


def test_run_many_requests_passing_state_equal_one_request() -> None:
    # A short warm-up so that the 4 simulated hours are mostly scored, not just learned.
    cfg = DetectorConfig(warmup_s=600.0, warmup_readings=30.0)
    per_device = fleet_readings(2, 1500, seed=2)
    whole = score_request(json.loads(request(per_device)), cfg)
    states: dict[str, Any] = {}
    parts: dict[str, list[dict[str, Any]]] = {d: [] for d in per_device}
    for start in range(0, 1500, 137):
        chunk = {d: r[start : start + 137] for d, r in per_device.items()}
        out = score_request(json.loads(request(chunk, states)), cfg)
        out = json.loads(json.dumps(out))  # the state travels as JSON text
        for device in out["devices"]:
            states[device["device_id"]] = device["state"]
            parts[device["device_id"]].extend(device["predictions"])
    for device in whole["devices"]:
        assert max(p["anomaly_score"] for p in device["predictions"]) > 0.01
        got = parts[device["device_id"]]
        assert [p["timestamp"] for p in got] == [p["timestamp"] for p in device["predictions"]]
        assert [p["top_metric"] for p in got] == [p["top_metric"] for p in device["predictions"]]
        for a, b in zip(got, device["predictions"], strict=True):
            assert a["anomaly_score"] == pytest.approx(b["anomaly_score"], abs=1e-9)
        split, one = load_state(states[device["device_id"]]), load_state(device["state"])
        assert split is not None
        assert one is not None
        for key, value in vars(one).items():
            if isinstance(value, np.ndarray):
                assert getattr(split, key) == pytest.approx(value, rel=1e-9, abs=1e-9), key
            else:
                assert getattr(split, key) == value, key


def test_run_scores_readings_with_missing_metrics_repeats_and_disorder() -> None:
    readings = [
        {"timestamp": "2026-01-01T00:00:10.000Z", "metrics": {"a": 1.0, "b": 2.0}},
        {"timestamp": "2026-01-01T00:00:10.000Z", "metrics": {"a": 1.0}},
        {"timestamp": "2026-01-01T00:00:00+00:00", "metrics": {"b": None}},
        {"timestamp": "2026-01-04T00:00:00Z", "metrics": {}},
    ]
    out = run(json.dumps({"contract": 1, "devices": [{"device_id": "x", "readings": readings}]}))
    preds = out["devices"][0]["predictions"]
    assert [p["timestamp"] for p in preds] == [r["timestamp"] for r in readings]
    assert [p["anomaly_score"] for p in preds] == [0.0] * 4


def test_run_starts_fresh_on_a_foreign_state_and_answers_an_empty_device() -> None:
    body = {
        "contract": 1,
        "devices": [
            {"device_id": "a", "state": {"v": 99, "junk": [1]}, "readings": []},
            {
                "device_id": "b",
                "state": "nonsense",
                "readings": [{"timestamp": "2026-01-01T00:00:00Z", "metrics": {"t": 1}}],
            },
        ],
    }
    out = run(json.dumps(body))
    assert out["devices"][0]["predictions"] == []
    assert out["devices"][0]["state"]["v"] == 4
    assert out["devices"][1]["state"]["metrics"] == ["t"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ("not json", "$"),
        ([], "$"),
        ({"devices": []}, "contract"),
        ({"contract": 3, "devices": []}, "contract"),
        ({"contract": 1}, "devices"),
        ({"contract": 1, "devices": [3]}, "devices[0]"),
        ({"contract": 1, "devices": [{"readings": []}]}, "devices[0].device_id"),
        ({"contract": 1, "devices": [{"device_id": "a"}]}, "devices[0].readings"),
        (
            {"contract": 1, "devices": [{"device_id": "a", "readings": [{"metrics": {}}]}]},
            "devices[0].readings[0].timestamp",
        ),
        (
            {
                "contract": 1,
                "devices": [{"device_id": "a", "readings": [{"timestamp": "2026-01-01T00:00:00"}]}],
            },
            "devices[0].readings[0].timestamp",
        ),
        (
            {
                "contract": 1,
                "devices": [
                    {"device_id": "a", "readings": [{"timestamp": "2026-01-01T00:00:00Z"}]}
                ],
            },
            "devices[0].readings[0].metrics",
        ),
        (
            {
                "contract": 1,
                "devices": [
                    {
                        "device_id": "a",
                        "readings": [
                            {"timestamp": "2026-01-01T00:00:00Z", "metrics": {"t": "hot"}}
                        ],
                    }
                ],
            },
            "devices[0].readings[0].metrics.t",
        ),
    ],
)
def test_run_bad_request_names_the_field(body: object, field: str) -> None:
    raw = body if isinstance(body, str) else json.dumps(body)
    out = run(raw)
    assert isinstance(out, BadRequest)
    assert out.status_code == 400
    assert out["field"] == field
    assert out["error"]
    json.dumps(out)


def test_score_module_imports_without_the_inference_server() -> None:
    assert callable(score.init)
    assert callable(score.run)


class FakeAMLResponse:
    """The inference server's AMLResponse, recording what the script built."""

    calls: ClassVar[list[tuple[object, int, dict | None, bool]]] = []

    def __init__(
        self,
        message: object,
        status_code: int,
        response_headers: dict | None = None,
        json_str: bool = False,
    ) -> None:
        self.calls.append((message, status_code, response_headers, json_str))


@pytest.fixture
def under_inference_server(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Make `azureml.contrib.services.aml_response` importable, as it is under azmlinfsrv."""
    import sys
    import types

    module = types.ModuleType("azureml.contrib.services.aml_response")
    module.AMLResponse = FakeAMLResponse  # type: ignore[attr-defined]
    for name in ("azureml", "azureml.contrib", "azureml.contrib.services"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "azureml.contrib.services.aml_response", module)
    FakeAMLResponse.calls = []
    return FakeAMLResponse.calls


def test_run_bad_request_is_an_aml_response_under_the_inference_server(
    under_inference_server: list[tuple],
) -> None:
    out = run(json.dumps({"contract": 1}))
    assert isinstance(out, FakeAMLResponse)
    error = {"error": "must be an array", "field": "devices"}
    assert under_inference_server == [(error, 400, None, True)]


def test_run_answer_is_serialized_by_the_script_under_the_inference_server(
    under_inference_server: list[tuple], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server's own json.dumps of a returned dict costs ~15x orjson's: run() hands it bytes.
    import sys

    init()
    raw = request(fleet_readings(2, 5))
    out = run(raw)
    assert isinstance(out, FakeAMLResponse)
    [(body, status, headers, json_str)] = under_inference_server
    assert (status, headers, json_str) == (200, {"Content-Type": "application/json"}, False)
    assert isinstance(body, bytes)
    monkeypatch.delitem(sys.modules, "azureml.contrib.services.aml_response")
    assert json.loads(body) == run(raw)  # the same answer as the dict run() returns elsewhere


STAMPS_2 = ["2026-01-01T00:00:00Z", "2026-01-01T00:00:10Z", "2026-01-01T00:00:20Z"]


def columnar(**change: Any) -> str:
    """A contract-2 request: three good devices, then ``devices[3]`` with ``change`` made."""
    good = {
        "state": None,
        "timestamps": STAMPS_2,
        "metrics": ["a", "b"],
        "values": [[1.0, 2.0], [1.5, None], [2, 2.5]],
    }
    devices = [{"device_id": f"d{d}", **good} for d in range(4)]
    for key, value in change.items():
        if value is None:
            del devices[3][key]
        else:
            devices[3][key] = value
    return json.dumps({"contract": 2, "devices": devices})


@pytest.mark.parametrize(
    ("body", "field", "says"),
    [
        ('{"contract": 3, "devices": []}', "contract", "must be 1 or 2"),
        ('{"contract": "2", "devices": []}', "contract", "must be 1 or 2"),
        ('{"contract": 2}', "devices", "array"),
        ('{"contract": 2, "devices": [[]]}', "devices[0]", "object"),
        (columnar(device_id=None), "devices[3].device_id", "string"),
        (columnar(device_id=7), "devices[3].device_id", "string"),
        (columnar(timestamps=None), "devices[3].timestamps", "array"),
        (columnar(timestamps="2026-01-01T00:00:00Z"), "devices[3].timestamps", "array"),
        (columnar(metrics=None), "devices[3].metrics", "array"),
        (columnar(metrics={"a": 0, "b": 1}), "devices[3].metrics", "array"),
        (columnar(metrics=["a", 2]), "devices[3].metrics[1]", "string"),
        (columnar(metrics=[["a"], "b"]), "devices[3].metrics[0]", "string"),
        (columnar(metrics=["a", ""]), "devices[3].metrics[1]", "non-empty"),
        (columnar(metrics=["a", "a"]), "devices[3].metrics", "distinct"),
        (columnar(metrics=[], values=[[], [], []]), "devices[3].metrics", "at least one"),
        (columnar(values=None), "devices[3].values", "array"),
        (columnar(values={"0": [1.0, 2.0]}), "devices[3].values", "array"),
        (columnar(timestamps=STAMPS_2[:2]), "devices[3].timestamps", "2 entries but values has 3"),
        (columnar(values=[[1.0, 2.0]] * 4), "devices[3].timestamps", "3 entries but values has 4"),
        (columnar(timestamps=[*STAMPS_2[:2], "yesterday"]), "devices[3].timestamps[2]", "ISO"),
        (
            columnar(timestamps=[STAMPS_2[0], "2026-01-01T00:00:10", STAMPS_2[2]]),
            "devices[3].timestamps[1]",
            "offset",
        ),
        (columnar(timestamps=[STAMPS_2[0], 5, STAMPS_2[2]]), "devices[3].timestamps[1]", "ISO"),
        (columnar(values=[[1.0, 2.0], {"a": 1.0}, [2.0, 3.0]]), "devices[3].values[1]", "array"),
        (columnar(values=[[1.0, 2.0], [1.0], [2.0, 3.0]]), "devices[3].values[1]", "2 numbers"),
        (columnar(values=[[1.0, 2.0], [1.0, 2.0, 3.0], [2.0, 3.0]]), "devices[3].values[1]", "2"),
        (columnar(values=[[1.0, 2.0], [1.0, 2.0], [2.0, "3"]]), "devices[3].values[2][1]", "num"),
        (columnar(values=[[1.0, 2.0], [True, 2.0], [2.0, 3.0]]), "devices[3].values[1][0]", "num"),
        (columnar(values=[[1.0, [2.0]], [1.0, 2.0], [2.0, 3.0]]), "devices[3].values[0][1]", "num"),
        (columnar(values=[[1.0, {}], [1.0, 2.0], [2.0, 3.0]]), "devices[3].values[0][1]", "num"),
        # The first problem in reading order: a value of reading 1 before a stamp of reading 2.
        (
            columnar(
                timestamps=[*STAMPS_2[:2], "nope"], values=[[1.0, 2.0], [1.0, "x"], [2.0, 3.0]]
            ),
            "devices[3].values[1][1]",
            "number or null",
        ),
        # A contract-1 device sent as contract 2.
        (
            '{"contract": 2, "devices": [{"device_id": "d", "readings": []}]}',
            "devices[0].timestamps",
            "array",
        ),
    ],
)
def test_run_bad_contract_2_request_names_the_field(body: str, field: str, says: str) -> None:
    out = run(body)
    assert isinstance(out, BadRequest)
    assert out.status_code == 400
    assert out == {"error": out["error"], "field": field}
    assert says in out["error"]
    json.dumps(out)


def test_run_contract_2_request_of_good_devices_is_scored() -> None:
    # The bad requests above are one change away from this one.
    out = run(columnar())
    assert [d["device_id"] for d in out["devices"]] == ["d0", "d1", "d2", "d3"]
    for device in out["devices"]:
        assert device["predictions"]["timestamp"] == STAMPS_2
        assert device["predictions"]["is_anomaly"] == [False] * 3


def test_run_contract_2_answer_is_serialized_by_the_script_under_the_inference_server(
    under_inference_server: list[tuple], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    out = run(columnar().encode())
    assert isinstance(out, FakeAMLResponse)
    [(body, status, headers, json_str)] = under_inference_server
    assert (status, headers, json_str) == (200, {"Content-Type": "application/json"}, False)
    monkeypatch.delitem(sys.modules, "azureml.contrib.services.aml_response")
    assert json.loads(body) == run(columnar())
    out = run(columnar(metrics=["a", "a"]))
    assert out == {"error": "names must be distinct: 'a' repeats", "field": "devices[3].metrics"}


def test_score_request_devices_sharing_metrics_get_the_failure_fields_they_get_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Devices with the same metrics go through the trained predictor in one call; each
    # reading's fields must be what the device gets in a request of its own.
    artifacts = Path(__file__).resolve().parents[2] / "model" / "artifacts"
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(artifacts))
    init()
    try:
        rng = random.Random(5)
        pump = kind_metrics("pump")
        t0 = datetime(2026, 11, 27, tzinfo=UTC)

        def readings(start: int, n: int) -> list[dict[str, Any]]:
            return [
                {
                    "timestamp": (t0 + timedelta(seconds=120 * i)).isoformat(),
                    "metrics": {
                        m: 100.0 * (k + 1) + rng.gauss(0.0, 1.0) for k, m in enumerate(pump)
                    },
                }
                for i in range(start, start + n)
            ]

        warm = score_request(
            {
                "contract": 1,
                "devices": [{"device_id": "w", "state": None, "readings": readings(0, 500)}],
            }
        )["devices"][0]["state"]
        devices = [
            {
                "device_id": f"pump-{d}",
                "state": warm if d % 4 else None,
                "readings": readings(500, 12),
            }
            for d in range(9)
        ]
        devices.append({"device_id": "reordered", "state": None, "readings": [
            {"timestamp": r["timestamp"], "metrics": dict(reversed(r["metrics"].items()))}
            for r in readings(500, 12)
        ]})  # fmt: skip
        together = score_request({"contract": 1, "devices": devices})["devices"]
        alone = [
            score_request({"contract": 1, "devices": [device]})["devices"][0] for device in devices
        ]
    finally:
        monkeypatch.delenv("AZUREML_MODEL_DIR")
        init()
    assert together == alone
    probs = [p["failure_probability"] for d in together for p in d["predictions"]]
    assert sum(p is not None for p in probs) >= 60  # the warm pumps' readings
    assert all(type(p) is float for p in probs if p is not None)


@pytest.mark.parametrize("enabled", [True, False], ids=["gc-on", "gc-off"])
def test_run_pauses_the_garbage_collector_while_scoring(
    enabled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []

    def scoring(request: object) -> dict[str, Any]:
        seen.append(gc.isenabled())
        if request == {"fail": True}:
            raise RuntimeError("boom")
        return {"devices": []}

    monkeypatch.setattr(score, "score_request", scoring)
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    try:
        assert run('{"contract": 1}') == {"devices": []}
        with pytest.raises(RuntimeError, match="boom"):
            run('{"fail": true}')
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()
    assert seen == [False, False]
