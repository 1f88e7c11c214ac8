"""AML entry script: ``init()`` and ``run(raw_data)`` for the anomaly model.

``run`` takes a scoring request as a JSON string and returns a JSON-serialisable dict (see
``ARCHITECTURE.md``, "AML scoring request/response"). Two contracts are served, the answer in
the request's (its ``"contract"``):

* **1**: each device sends ``readings``, an object per reading (``{"timestamp", "metrics":
  {name: value}}``), and gets ``predictions``, an object per reading.
* **2** (what the function app sends, :data:`CONTRACT`): the same information in columns.
  Each device sends ``timestamps`` (one per reading), ``metrics`` (its metric names) and
  ``values`` (a row per reading, a number or null per metric; null = no value, as a metric
  missing from a contract-1 reading), and gets ``predictions`` as an object of six lists, one
  per field. Neither side builds or parses an object per reading, which at a few thousand
  readings per request is measurable CPU on both; the values are exactly contract 1's.

A malformed request gets a 400 whose JSON body names the offending field: under the inference
server that is an ``AMLResponse`` (passed through as is), elsewhere a :class:`BadRequest`
dict, so this module imports and is testable without the server installed. An exception would
become a 500, which the pipeline treats as transient and retries: wrong for input that will
never become valid.

The failure predictor (``model.failure``) fills ``failure_probability`` and
``maintenance_due`` when its artifact has a predictor for the device's metric set and the
device's trend has enough history; otherwise they are ``null``, never a made-up number.

Devices are scored together (:func:`model.detector.score_devices`), the failure predictor runs
once per metric set rather than once per device, and the per-reading work
here (timestamps, metric values) avoids per-reading objects where it can: a 2,000-reading
request spends most of its time in this module, not in numpy. The usual request's readings
become one array of values and one of times for all its devices (:mod:`model.request`);
states are loaded, scored and dumped a metric set at a time (:mod:`model.state`).
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from model.detector import DetectorConfig, DeviceScores, score_devices
from model.failure import FailureModel, load_failure_model
from model.request import RequestError, parse_devices
from model.state import DeviceState, dump_states, load_states

__all__ = [
    "CONTRACT",
    "CONTRACTS",
    "MODEL_VERSION",
    "BadRequest",
    "RequestError",
    "init",
    "run",
    "score_request",
]

logger = logging.getLogger(__name__)

CONTRACT = 2  # what the function app sends
CONTRACTS = (1, 2)  # what this script answers
MODEL_VERSION = "fleetscore-anomaly-0.2.0"
_config = DetectorConfig()
_failure = FailureModel()  # empty until init(): every failure field null


class BadRequest(dict):
    """The 400 body ``{"error", "field"}`` returned when the inference server is not installed."""

    status_code = 400


def init() -> None:
    """Prepare the scorer once per worker (the AML server calls this before any ``run``).

    The detector learns online from each device's stream, so its defaults are its whole model;
    the failure predictor is loaded from the registered model's directory (an empty one, every
    failure field null, when it holds no artifact).
    """
    global _config, _failure
    _config = DetectorConfig()
    _failure = load_failure_model(os.environ.get("AZUREML_MODEL_DIR"))
    logger.info("anomaly model %s ready", MODEL_VERSION)


def _failure_fields(
    results: list[tuple[DeviceState, DeviceScores]],
) -> list[tuple[list[float | None], list[bool | None]]]:
    """``failure_probability`` and ``maintenance_due`` of every reading of every device.

    The predictor works row by row, so devices with the same metrics (in the same order) go
    through it in one call, and its arrays become Python values in one conversion per group.
    A reading without a prediction (no predictor for the metric set, trend not ready) gets
    ``None`` for both.
    """
    out: list[tuple[list[float | None], list[bool | None]]] = [
        ([None] * n, [None] * n) for n in (scores.score.shape[0] for _, scores in results)
    ]
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, (state, scores) in enumerate(results):
        if scores.score.shape[0]:
            groups.setdefault(tuple(state.names), []).append(i)
    for names, members in groups.items():
        scored = [results[i][1] for i in members]
        failure = _failure.predict(
            list(names),
            np.concatenate([s.features for s in scored]),
            np.concatenate([s.ready for s in scored]),
        )
        if failure is None:
            continue
        p_arr = np.asarray(failure[0], dtype=float)
        missing = np.isnan(p_arr)
        probs = np.where(missing, None, p_arr.astype(object)).tolist()
        dues = np.where(missing, None, np.asarray(failure[1], dtype=bool).astype(object)).tolist()
        pos = 0
        for i, s in zip(members, scored, strict=True):
            n = s.score.shape[0]
            out[i] = (probs[pos : pos + n], dues[pos : pos + n])
            pos += n
    return out


def score_request(request: object, config: DetectorConfig | None = None) -> dict[str, Any]:
    """Score a parsed request and return the response (a pure function of its input).

    The answer is in the request's contract: a prediction object per reading for contract 1,
    a column per field for contract 2.

    Raises:
        RequestError: naming the first malformed field.
    """
    cfg = config or _config
    if not isinstance(request, Mapping):
        raise RequestError("$", "must be a JSON object")
    contract = request.get("contract")
    if contract not in CONTRACTS:
        raise RequestError("contract", f"must be {' or '.join(map(str, CONTRACTS))}")
    devices = request.get("devices")
    if not isinstance(devices, list):
        raise RequestError("devices", "must be an array")
    parsed = parse_devices(contract, devices)
    answer = _prediction_rows if contract == 1 else _prediction_columns
    raw_states = [device.get("state") for device in devices]
    states = load_states(raw_states)
    for d, (raw_state, state) in enumerate(zip(raw_states, states, strict=True)):
        if state is None and raw_state is not None:
            logger.warning(
                "devices[%d].state of %s: not a state this model can use (foreign version, "
                "malformed or corrupt); the device starts a fresh baseline",
                d,
                parsed[d][0],
            )
    results = score_devices(
        states, [p[1] for p in parsed], [p[2] for p in parsed], [p[3] for p in parsed], cfg
    )
    dumped = dump_states([state for state, _ in results])
    failures = _failure_fields(results)
    out: list[dict[str, Any]] = []
    for (device_id, _, _, _, stamps), (state, scores), raw_state, (prob, due) in zip(
        parsed, results, dumped, failures, strict=True
    ):
        names = [*state.names, None]  # top == -1 (nothing scored) names nothing
        preds = answer(stamps, scores, list(map(names.__getitem__, scores.top.tolist())), prob, due)
        out.append({"device_id": device_id, "state": raw_state, "predictions": preds})
    return {"model_version": MODEL_VERSION, "devices": out}


def _prediction_rows(
    stamps: list[Any],
    scores: DeviceScores,
    tops: list[str | None],
    probs: list[float | None],
    dues: list[bool | None],
) -> list[dict[str, Any]]:
    """Contract 1's ``predictions``: an object per reading."""
    return [
        {
            "timestamp": stamp,
            "anomaly_score": score,
            "is_anomaly": flag,
            "top_metric": top,
            "failure_probability": p,
            "maintenance_due": m,
        }
        for stamp, score, flag, top, p, m in zip(
            stamps,
            scores.score.tolist(),
            scores.is_anomaly.tolist(),
            tops,
            probs,
            dues,
            strict=True,
        )
    ]


def _prediction_columns(
    stamps: list[Any],
    scores: DeviceScores,
    tops: list[str | None],
    probs: list[float | None],
    dues: list[bool | None],
) -> dict[str, list[Any]]:
    """Contract 2's ``predictions``: a list per field, in reading order."""
    return {
        "timestamp": stamps,
        "anomaly_score": scores.score.tolist(),
        "is_anomaly": scores.is_anomaly.tolist(),
        "top_metric": tops,
        "failure_probability": probs,
        "maintenance_due": dues,
    }


def _bad_request(field: str, message: str) -> Any:
    body = {"error": message, "field": field}
    try:
        from azureml.contrib.services.aml_response import AMLResponse
    except ImportError:
        return BadRequest(body)
    return AMLResponse(body, 400, json_str=True)


def _ok(doc: dict[str, Any]) -> Any:
    """The answer, serialized here: the inference server's own json.dumps costs ~15x orjson's."""
    try:
        from azureml.contrib.services.aml_response import AMLResponse
    except ImportError:
        return doc
    body = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    return AMLResponse(body, 200, {"Content-Type": "application/json"})


def run(raw_data: str | bytes) -> Any:
    """Score one request given as a JSON string; a 400 naming the field if it is malformed.

    The cyclic garbage collector is paused while it runs: a request is tens of thousands of
    objects (readings, states, predictions) that all live until the answer is written, and
    the collector's passes over them and over everything the server holds cost about an
    eighth of a 64-device request's CPU. Nothing here makes reference cycles; reference
    counting frees the request and its answer as before.
    """
    paused = gc.isenabled()
    gc.disable()
    try:
        return _run(raw_data)
    finally:
        if paused:
            gc.enable()


def _run(raw_data: str | bytes) -> Any:
    try:
        request = orjson.loads(raw_data)  # ~2x json's speed; NaN and Infinity are not JSON
    except (TypeError, ValueError) as exc:
        return _bad_request("$", f"not JSON: {exc}")
    try:
        return _ok(score_request(request))
    except RequestError as exc:
        logger.warning("bad scoring request: %s", exc)
        return _bad_request(exc.field, exc.message)
