"""Predictions: what the model returns per reading, validated at the model-response boundary.

Besides the contract's fields a prediction may carry extra scalar fields (another model behind
the same endpoint, such as a forecaster); they are kept in `extra` and stored and pushed as-is.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from operator import itemgetter
from typing import Any

import orjson

from .errors import FieldError, ValidationError
from .readings import Reading, format_timestamp, parse_timestamp

__all__ = [
    "CORE_FIELDS",
    "MAX_EXTRA_FIELDS",
    "MAX_STATE_CHARS",
    "DeviceResult",
    "Prediction",
    "parse_device_result",
]

Scalar = float | int | str | bool | None

CORE_FIELDS = (
    "timestamp",
    "anomaly_score",
    "is_anomaly",
    "top_metric",
    "failure_probability",
    "maintenance_due",
)
# Extra field names become Table property and Power BI column names: keep them plain.
_EXTRA_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
_RESERVED = frozenset({"device_id", "model_version", "metrics", "partitionkey", "rowkey", "etag"})
_MAX_STRING = 1024
# A stored row has at most 252 properties; the contract's fields and keys take about a dozen.
MAX_EXTRA_FIELDS = 200
# A state is stored in one Table entity (1 MiB, strings count two bytes per character).
MAX_STATE_CHARS = 256 * 1024
_STATE_JSON = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
# Type sets for checking a whole column at once: `_FLOAT.issuperset(map(type, column))`.
_DICT = frozenset({dict})
_FLOAT = frozenset({float})
_FLOAT_OR_NONE = frozenset({float, type(None)})
_BOOL = frozenset({bool})
_BOOL_OR_NONE = frozenset({bool, type(None)})
_STR_OR_NONE = frozenset({str, type(None)})
_CORE_COLUMNS = itemgetter(*CORE_FIELDS)
# Columns a contract-2 answer must have; the others may be left out when all null.
_REQUIRED = ("timestamp", "anomaly_score", "is_anomaly")


@dataclass(slots=True)
class Prediction:
    """One scored reading: the model's verdict joined with the reading it is about.

    Treat it as a value: nothing changes one after it is made. It is not a frozen dataclass
    because one is made per scored reading, and a frozen one's ``__init__`` sets each of its
    ten fields through ``object.__setattr__``: 1.2 µs each instead of 0.26.
    """

    device_id: str
    timestamp: datetime
    anomaly_score: float
    is_anomaly: bool
    top_metric: str | None
    failure_probability: float | None
    maintenance_due: bool | None
    model_version: str
    metrics: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Scalar] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Return the flat JSON form used by the query API and the results sink."""
        return {
            "device_id": self.device_id,
            "timestamp": format_timestamp(self.timestamp),
            "anomaly_score": self.anomaly_score,
            "is_anomaly": self.is_anomaly,
            "top_metric": self.top_metric,
            "failure_probability": self.failure_probability,
            "maintenance_due": self.maintenance_due,
            "model_version": self.model_version,
            "metrics": self.metrics,
            **self.extra,
        }


@dataclass(frozen=True, slots=True)
class DeviceResult:
    """The model's answer for one device: its next state and one prediction per reading."""

    device_id: str
    state: dict[str, Any]
    predictions: list[Prediction]
    # `state` as compact JSON, when the validation already encoded it (the next request's form).
    state_json: str | None = field(default=None, repr=False, compare=False)


def _state_json(state: Mapping[str, Any]) -> str:
    """``state`` as compact JSON; ValueError or TypeError unless it is plain JSON, numbers finite.

    orjson writes it ~15x faster than the json module, but writes NaN and Infinity as
    ``null``: a state whose text has a ``null`` in it (the model's own never do), or that orjson
    cannot write (keys that are not strings, integers over 64 bits), goes through the json
    module, which refuses what is not JSON.
    """
    try:
        text = orjson.dumps(state).decode()
    except TypeError:
        return _STATE_JSON.encode(state)
    return _STATE_JSON.encode(state) if "null" in text else text


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    out = float(value)
    return out if math.isfinite(out) else None


def _prediction(
    raw: object, reading: Reading, model_version: str, where: str
) -> tuple[Prediction | None, list[FieldError]]:
    if not isinstance(raw, Mapping):
        return None, [FieldError(where, "must be an object")]
    errors: list[FieldError] = []
    try:
        ts = parse_timestamp(raw.get("timestamp"), f"{where}.timestamp")
        if ts != reading.timestamp:
            errors.append(
                FieldError(f"{where}.timestamp", "does not match the reading at this position")
            )
    except ValidationError as exc:
        errors.extend(exc.details)
    score = _number(raw.get("anomaly_score"))
    if score is None or not 0.0 <= score <= 1.0:
        errors.append(FieldError(f"{where}.anomaly_score", "must be a number in [0, 1]"))
    is_anomaly = raw.get("is_anomaly")
    if not isinstance(is_anomaly, bool):
        errors.append(FieldError(f"{where}.is_anomaly", "must be a boolean"))
    top = raw.get("top_metric")
    if top is not None and (not isinstance(top, str) or len(top) > _MAX_STRING):
        errors.append(
            FieldError(
                f"{where}.top_metric",
                f"must be a string of at most {_MAX_STRING} characters, or null",
            )
        )
    prob: float | None = None
    if raw.get("failure_probability") is not None:
        prob = _number(raw.get("failure_probability"))
        if prob is None or not 0.0 <= prob <= 1.0:
            errors.append(
                FieldError(f"{where}.failure_probability", "must be a number in [0, 1] or null")
            )
    due = raw.get("maintenance_due")
    if due is not None and not isinstance(due, bool):
        errors.append(FieldError(f"{where}.maintenance_due", "must be a boolean or null"))
    extra: dict[str, Scalar] = {}
    if len(raw) - len(CORE_FIELDS) > MAX_EXTRA_FIELDS:
        errors.append(FieldError(where, f"more than {MAX_EXTRA_FIELDS} extra fields"))
        return None, errors
    for name, value in raw.items():
        if name in CORE_FIELDS:
            continue
        if not isinstance(name, str) or _EXTRA_NAME.fullmatch(name) is None or name in _RESERVED:
            errors.append(
                FieldError(
                    f"{where}.{str(name)[:40]}", "extra field name must match [a-z][a-z0-9_]{0,39}"
                )
            )
        elif value is None or isinstance(value, bool | str):
            if isinstance(value, str) and len(value) > _MAX_STRING:
                errors.append(FieldError(f"{where}.{name}", f"string longer than {_MAX_STRING}"))
            extra[name] = value
        elif (num := _number(value)) is not None:
            extra[name] = value if isinstance(value, int) else num
        else:
            errors.append(
                FieldError(f"{where}.{name}", "must be a finite number, string, boolean or null")
            )
    if errors:
        return None, errors
    assert score is not None
    assert isinstance(is_anomaly, bool)
    return (
        Prediction(
            device_id=reading.device_id,
            timestamp=reading.timestamp,
            anomaly_score=score,
            is_anomaly=is_anomaly,
            top_metric=top if isinstance(top, str) else None,
            failure_probability=prob,
            maintenance_due=due if isinstance(due, bool) else None,
            model_version=model_version,
            metrics=reading.metrics,
            extra=extra,
        ),
        [],
    )


def _in_unit_interval(values: Sequence[float]) -> bool:
    # NaN fails a comparison wherever min() or max() meet it, and the sum catches the rest.
    return min(values) >= 0.0 and max(values) <= 1.0 and math.isfinite(sum(values))


def _uniform_predictions(
    preds: list[Any], readings: Sequence[Reading], model_version: str, stamps: Sequence[str]
) -> list[Prediction] | None:
    """The usual contract-1 answer: every prediction an object with exactly the core fields.

    Its columns then go through :func:`_from_columns`; None for anything else.
    """
    if not _DICT.issuperset(map(type, preds)) or set(map(len, preds)) != {len(CORE_FIELDS)}:
        return None
    try:
        columns = list(zip(*map(_CORE_COLUMNS, preds), strict=True))
    except KeyError:
        return None
    return _from_columns(columns, readings, model_version, stamps)


def _from_columns(
    columns: Sequence[Sequence[Any]],
    readings: Sequence[Reading],
    model_version: str,
    stamps: Sequence[str],
) -> list[Prediction] | None:
    """The usual answer, checked a column at a time instead of a prediction at a time.

    ``columns`` are the core fields' values in ``CORE_FIELDS`` order, one per reading: each
    timestamp the one sent for its reading (the wire form of a millisecond-truncated UTC
    reading time, so it parses back to it), floats and booleans where the contract asks for
    them. None for anything else: `_prediction` then checks each prediction and names every
    problem.
    """
    times, scores, anomalies, tops, probs, dues = columns
    if list(times) != list(stamps):
        return None
    if not (_FLOAT.issuperset(map(type, scores)) and _in_unit_interval(scores)):
        return None
    if not (_BOOL.issuperset(map(type, anomalies)) and _BOOL_OR_NONE.issuperset(map(type, dues))):
        return None
    if not _STR_OR_NONE.issuperset(map(type, tops)) or (
        max(map(len, filter(None, tops)), default=0) > _MAX_STRING
    ):
        return None
    if not _FLOAT_OR_NONE.issuperset(map(type, probs)):
        return None
    known = [p for p in probs if p is not None]
    if known and not _in_unit_interval(known):
        return None
    return [
        Prediction(r.device_id, r.timestamp, s, a, t, p, d, model_version, r.metrics, {})
        for r, s, a, t, p, d in zip(readings, scores, anomalies, tops, probs, dues, strict=True)
    ]


def _check_columns(columns: Mapping[Any, Any], n: int) -> None:
    """Contract 2's ``predictions``: an object of columns, each an array of ``n`` values.

    Raises:
        ValidationError: naming each member that is not, and each required one missing.
    """
    wrong = [
        name for name, column in columns.items() if type(column) is not list or len(column) != n
    ]
    wrong += [name for name in _REQUIRED if name not in columns]
    if wrong:
        raise ValidationError(
            [
                FieldError(f"predictions.{str(name)[:40]}", f"must be an array of {n} values")
                for name in wrong
            ]
        )


def _rows(columns: Mapping[Any, list[Any]]) -> list[dict[Any, Any]]:
    """The predictions of checked columns one object each, for the checks that name a field.

    A nullable column the object lacks is then a field each prediction lacks.
    """
    names = list(columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def parse_device_result(
    raw: object,
    readings: Sequence[Reading],
    model_version: str,
    *,
    stamps: Sequence[str] | None = None,
) -> DeviceResult:
    """Validate the model's answer for one device against the readings that were sent.

    Args:
        raw: the device's entry in the response.
        readings: what was sent for the device, in order.
        model_version: the response's model version, stamped on every prediction.
        stamps: each reading's timestamp as it was sent (`format_timestamp`), if the caller
            has them; worked out here otherwise.

    Raises:
        ValidationError: naming each offending field (`predictions[3].anomaly_score`, ...).
    """
    if not isinstance(raw, Mapping):
        raise ValidationError.single("devices[]", "must be an object")
    device_id = readings[0].device_id if readings else raw.get("device_id")
    if raw.get("device_id") != device_id:
        raise ValidationError.single("device_id", f"expected {device_id!r}")
    state = raw.get("state")
    if not isinstance(state, Mapping):
        raise ValidationError.single("state", "must be an object")
    try:
        state_json = _state_json(state)
    except (TypeError, ValueError):
        raise ValidationError.single("state", "must be plain JSON (finite numbers)") from None
    if len(state_json) > MAX_STATE_CHARS:
        raise ValidationError.single(
            "state", f"{len(state_json)} characters of JSON; at most {MAX_STATE_CHARS}"
        )
    preds = raw.get("predictions")
    columns: Mapping[Any, list[Any]] | None = None
    if isinstance(preds, Mapping):  # contract 2: a column per field
        _check_columns(preds, len(readings))
        columns = preds
    elif not isinstance(preds, list):
        raise ValidationError.single(
            "predictions", "must be an object of columns, or an array of predictions"
        )
    elif len(preds) != len(readings):
        raise ValidationError.single(
            "predictions", f"{len(preds)} predictions for {len(readings)} readings"
        )
    if stamps is None:
        stamps = [format_timestamp(r.timestamp) for r in readings]
    fast: list[Prediction] | None = []
    if readings and columns is None:
        fast = _uniform_predictions(preds, readings, model_version, stamps)
    elif readings and columns is not None:
        exact = len(columns) == len(CORE_FIELDS) and all(name in columns for name in CORE_FIELDS)
        fast = (
            _from_columns(_CORE_COLUMNS(columns), readings, model_version, stamps)
            if exact
            else None
        )
        if fast is None:
            preds = _rows(columns)
    if fast is not None:
        return DeviceResult(str(device_id), dict(state), fast, state_json)
    out: list[Prediction] = []
    errors: list[FieldError] = []
    for i, (item, reading) in enumerate(zip(preds, readings, strict=True)):
        pred, problems = _prediction(item, reading, model_version, f"predictions[{i}]")
        if problems:
            errors.extend(problems)
        elif pred is not None:
            out.append(pred)
    if errors:
        raise ValidationError(errors)
    return DeviceResult(str(device_id), dict(state), out, state_json)
