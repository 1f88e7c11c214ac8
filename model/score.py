"""AML entry script: ``init()`` and ``run(raw_data)`` for the anomaly model.

``run`` takes the contract's request as a JSON string and returns a JSON-serialisable dict
(see ``ARCHITECTURE.md``, "AML scoring request/response"). A malformed request gets a 400 whose
JSON body names the offending field: under the inference server that is an ``AMLResponse``
(passed through as is), elsewhere a :class:`BadRequest` dict, so this module imports and is
testable without the server installed. An exception would become a 500, which the pipeline
treats as transient and retries: wrong for input that will never become valid.

The failure predictor is not trained yet: ``failure_probability`` and ``maintenance_due`` are
``null``, never a made-up number.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np

from model.detector import DetectorConfig, score_device
from model.state import dump_state, load_state

__all__ = [
    "CONTRACT",
    "MODEL_VERSION",
    "BadRequest",
    "RequestError",
    "init",
    "run",
    "score_request",
]

logger = logging.getLogger(__name__)

CONTRACT = 1
MODEL_VERSION = "fleetscore-anomaly-0.1.0"
_config = DetectorConfig()


class RequestError(ValueError):
    """A request that can never be scored; ``field`` is its path, e.g. ``devices[0].readings``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class BadRequest(dict):
    """The 400 body ``{"error", "field"}`` returned when the inference server is not installed."""

    status_code = 400


def init() -> None:
    """Prepare the scorer once per worker (the AML server calls this before any ``run``).

    There is no trained artifact yet: the detector learns online from each device's stream, so
    the defaults are the whole model.
    """
    global _config
    _config = DetectorConfig()
    logger.info("anomaly model %s ready", MODEL_VERSION)


def _epoch_ms(value: object, where: str) -> int:
    if not isinstance(value, str) or len(value) > 40 or "T" not in value.upper():
        raise RequestError(where, "must be an ISO 8601 date-time string with a UTC offset")
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise RequestError(where, f"not an ISO 8601 date-time: {value[:40]!r}") from None
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise RequestError(where, "needs a UTC offset such as Z or +00:00")
    return math.floor(ts.timestamp() * 1000)


def _device_arrays(
    readings: object, where: str
) -> tuple[list[str], np.ndarray, np.ndarray, list[Any]]:
    """Turn one device's readings into metric names, times (ms) and values (NaN = missing)."""
    if not isinstance(readings, list):
        raise RequestError(where, "must be an array")
    names: dict[str, int] = {}
    times: list[int] = []
    stamps: list[Any] = []
    rows: list[dict[int, float]] = []
    for i, reading in enumerate(readings):
        at = f"{where}[{i}]"
        if not isinstance(reading, Mapping):
            raise RequestError(at, "must be an object")
        times.append(_epoch_ms(reading.get("timestamp"), f"{at}.timestamp"))
        stamps.append(reading["timestamp"])
        metrics = reading.get("metrics")
        if not isinstance(metrics, Mapping):
            raise RequestError(f"{at}.metrics", "must be an object")
        row: dict[int, float] = {}
        for name, value in metrics.items():
            if value is None:
                continue  # a missing metric: scored on the others
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise RequestError(f"{at}.metrics.{name}", "must be a number or null")
            row[names.setdefault(name, len(names))] = float(value)
        rows.append(row)
    x = np.full((len(rows), len(names)), np.nan)
    for i, row in enumerate(rows):
        if row:
            x[i, list(row)] = list(row.values())
    return list(names), np.asarray(times, dtype=np.int64), x, stamps


def score_request(request: object, config: DetectorConfig | None = None) -> dict[str, Any]:
    """Score a parsed request and return the response (a pure function of its input).

    Raises:
        RequestError: naming the first malformed field.
    """
    cfg = config or _config
    if not isinstance(request, Mapping):
        raise RequestError("$", "must be a JSON object")
    if request.get("contract") != CONTRACT:
        raise RequestError("contract", f"must be {CONTRACT}")
    devices = request.get("devices")
    if not isinstance(devices, list):
        raise RequestError("devices", "must be an array")
    out: list[dict[str, Any]] = []
    for d, device in enumerate(devices):
        where = f"devices[{d}]"
        if not isinstance(device, Mapping):
            raise RequestError(where, "must be an object")
        device_id = device.get("device_id")
        if not isinstance(device_id, str) or not device_id:
            raise RequestError(f"{where}.device_id", "must be a non-empty string")
        names, t_ms, x, stamps = _device_arrays(device.get("readings"), f"{where}.readings")
        state, scores = score_device(load_state(device.get("state")), names, t_ms, x, cfg)
        preds = [
            {
                "timestamp": stamp,
                "anomaly_score": score,
                "is_anomaly": flag,
                "top_metric": state.names[top] if top >= 0 else None,
                "failure_probability": None,
                "maintenance_due": None,
            }
            for stamp, score, flag, top in zip(
                stamps,
                scores.score.tolist(),
                scores.is_anomaly.tolist(),
                scores.top.tolist(),
                strict=True,
            )
        ]
        out.append({"device_id": device_id, "state": dump_state(state), "predictions": preds})
    return {"model_version": MODEL_VERSION, "devices": out}


def _bad_request(field: str, message: str) -> Any:
    body = {"error": message, "field": field}
    try:
        from azureml.contrib.services.aml_response import AMLResponse
    except ImportError:
        return BadRequest(body)
    return AMLResponse(body, 400, json_str=True)


def run(raw_data: str | bytes) -> Any:
    """Score one request given as a JSON string; a 400 naming the field if it is malformed."""
    try:
        request = json.loads(raw_data)
    except (TypeError, ValueError) as exc:
        return _bad_request("$", f"not JSON: {exc}")
    try:
        return score_request(request)
    except RequestError as exc:
        logger.warning("bad scoring request: %s", exc)
        return _bad_request(exc.field, exc.message)
