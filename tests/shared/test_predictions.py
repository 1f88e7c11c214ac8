from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from shared.errors import FieldError, ValidationError
from shared.predictions import CORE_FIELDS, DeviceResult, Prediction, parse_device_result
from shared.readings import Reading

T0 = datetime(2026, 11, 27, 6, 0, tzinfo=UTC)
WIRE = ["2026-11-27T06:00:00.000Z", "2026-11-27T06:00:10.000Z", "2026-11-27T06:00:20.000Z"]


def readings(n: int = 3) -> list[Reading]:
    return [Reading("a", T0 + timedelta(seconds=10 * i), {"rpm": 1500.0 + i}) for i in range(n)]


def answer(n: int = 3, **changes: object) -> dict:
    preds = [
        {
            "timestamp": WIRE[i],
            "anomaly_score": 0.25,
            "is_anomaly": False,
            "top_metric": "rpm",
            "failure_probability": 0.5,
            "maintenance_due": False,
        }
        for i in range(n)
    ]
    for key, value in changes.items():
        preds[1][key] = value
    return {"device_id": "a", "state": {"seen": n}, "predictions": preds}


def columns(raw: dict) -> dict:
    """The same answer in contract 2's shape: a column per field (null where a row lacks it)."""
    names = list(dict.fromkeys(name for pred in raw["predictions"] for name in pred))
    cols = {name: [pred.get(name) for pred in raw["predictions"]] for name in names}
    return {**raw, "predictions": cols}


def prediction(i: int, **fields: object) -> Prediction:
    base = {
        "device_id": "a",
        "timestamp": T0 + timedelta(seconds=10 * i),
        "anomaly_score": 0.25,
        "is_anomaly": False,
        "top_metric": "rpm",
        "failure_probability": 0.5,
        "maintenance_due": False,
        "model_version": "v1",
        "metrics": {"rpm": 1500.0 + i},
    }
    return Prediction(**{**base, **fields})  # type: ignore[arg-type]


def details(raw: object, rs: list[Reading] | None = None) -> list[FieldError]:
    with pytest.raises(ValidationError) as info:
        parse_device_result(raw, readings() if rs is None else rs, "v1")
    return info.value.details


def test_parse_device_result_joins_predictions_with_their_readings():
    assert parse_device_result(answer(), readings(), "v1") == DeviceResult(
        "a", {"seen": 3}, [prediction(0), prediction(1), prediction(2)]
    )


def test_parse_device_result_accepts_other_timestamp_forms_and_nulls():
    raw = answer(failure_probability=None, maintenance_due=None, top_metric=None)
    raw["predictions"][2]["timestamp"] = "2026-11-27T08:00:20+02:00"
    raw["predictions"][0]["anomaly_score"] = 1
    result = parse_device_result(raw, readings(), "v1")
    assert result.predictions == [
        prediction(0, anomaly_score=1.0),
        prediction(1, failure_probability=None, maintenance_due=None, top_metric=None),
        prediction(2),
    ]
    assert type(result.predictions[0].anomaly_score) is float


def test_parse_device_result_keeps_extra_scalar_fields():
    result = parse_device_result(
        answer(forecast=3, note="hi", flag=True, gap=None), readings(), "v1"
    )
    assert result.predictions[1] == prediction(
        1, extra={"forecast": 3, "note": "hi", "flag": True, "gap": None}
    )
    assert [p.extra for p in (result.predictions[0], result.predictions[2])] == [{}, {}]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"anomaly_score": 1.5}, [("predictions[1].anomaly_score", "must be a number in [0, 1]")]),
        (
            {"anomaly_score": math.nan},
            [("predictions[1].anomaly_score", "must be a number in [0, 1]")],
        ),
        ({"anomaly_score": True}, [("predictions[1].anomaly_score", "must be a number in [0, 1]")]),
        (
            {"anomaly_score": "0.5"},
            [("predictions[1].anomaly_score", "must be a number in [0, 1]")],
        ),
        ({"is_anomaly": 0}, [("predictions[1].is_anomaly", "must be a boolean")]),
        (
            {"top_metric": 7},
            [
                (
                    "predictions[1].top_metric",
                    "must be a string of at most 1024 characters, or null",
                )
            ],
        ),
        (
            {"top_metric": "x" * 1025},
            [
                (
                    "predictions[1].top_metric",
                    "must be a string of at most 1024 characters, or null",
                )
            ],
        ),
        (
            {"failure_probability": -0.1},
            [("predictions[1].failure_probability", "must be a number in [0, 1] or null")],
        ),
        (
            {"failure_probability": math.inf},
            [("predictions[1].failure_probability", "must be a number in [0, 1] or null")],
        ),
        (
            {"maintenance_due": "no"},
            [("predictions[1].maintenance_due", "must be a boolean or null")],
        ),
        (
            {"timestamp": WIRE[2]},
            [("predictions[1].timestamp", "does not match the reading at this position")],
        ),
        (
            {"timestamp": "2026-11-27T06:00:10"},
            [
                (
                    "predictions[1].timestamp",
                    "needs a UTC offset such as Z or +00:00: '2026-11-27T06:00:10'",
                )
            ],
        ),
        (
            {"timestamp": 5},
            [("predictions[1].timestamp", "must be an ISO 8601 string with a UTC offset")],
        ),
        (
            {"Bad": 1},
            [("predictions[1].Bad", "extra field name must match [a-z][a-z0-9_]{0,39}")],
        ),
        (
            {"rowkey": 1},
            [("predictions[1].rowkey", "extra field name must match [a-z][a-z0-9_]{0,39}")],
        ),
        (
            {"more": [1]},
            [("predictions[1].more", "must be a finite number, string, boolean or null")],
        ),
        (
            {"more": math.nan},
            [("predictions[1].more", "must be a finite number, string, boolean or null")],
        ),
        ({"more": "y" * 1025}, [("predictions[1].more", "string longer than 1024")]),
        (
            {"anomaly_score": None, "is_anomaly": None},
            [
                ("predictions[1].anomaly_score", "must be a number in [0, 1]"),
                ("predictions[1].is_anomaly", "must be a boolean"),
            ],
        ),
    ],
)
def test_parse_device_result_names_each_bad_field(changes, expected):
    assert [(e.field, e.message) for e in details(answer(**changes))] == expected
    if set(changes) <= set(CORE_FIELDS):  # the same prediction, sent as columns
        assert [(e.field, e.message) for e in details(columns(answer(**changes)))] == expected


def test_parse_device_result_reads_columns():
    raw = columns(answer())
    assert parse_device_result(raw, readings(), "v1", stamps=WIRE) == DeviceResult(
        "a", {"seen": 3}, [prediction(0), prediction(1), prediction(2)]
    )
    assert parse_device_result(raw, readings(), "v1").state_json == '{"seen":3}'


def test_parse_device_result_reads_columns_without_the_nullable_ones():
    raw = columns(answer())
    for name in ("top_metric", "failure_probability", "maintenance_due"):
        del raw["predictions"][name]
    nulls = {"top_metric": None, "failure_probability": None, "maintenance_due": None}
    assert parse_device_result(raw, readings(), "v1").predictions == [
        prediction(i, **nulls) for i in range(3)
    ]


def test_parse_device_result_keeps_extra_columns():
    raw = columns(answer())
    raw["predictions"]["forecast"] = [1, 2.5, None]
    result = parse_device_result(raw, readings(), "v1")
    assert [p.extra for p in result.predictions] == [
        {"forecast": 1},
        {"forecast": 2.5},
        {"forecast": None},
    ]
    assert result.predictions[0] == prediction(0, extra={"forecast": 1})


@pytest.mark.parametrize(
    ("change", "fields"),
    [
        (lambda cols: cols.update(anomaly_score=[0.1, 0.2]), ["predictions.anomaly_score"]),
        (lambda cols: cols.update(is_anomaly=(False,) * 3), ["predictions.is_anomaly"]),
        (lambda cols: cols.update(extra=None), ["predictions.extra"]),
        (lambda cols: cols.pop("timestamp"), ["predictions.timestamp"]),
        (
            lambda cols: (cols.pop("is_anomaly"), cols.update(top_metric=[])),
            ["predictions.top_metric", "predictions.is_anomaly"],
        ),
    ],
)
def test_parse_device_result_names_a_column_of_the_wrong_shape(change, fields):
    raw = columns(answer())
    change(raw["predictions"])
    found = details(raw)
    assert [e.field for e in found] == fields
    assert {e.message for e in found} == {"must be an array of 3 values"}


def test_parse_device_result_names_each_bad_cell_of_a_column():
    raw = columns(answer())
    raw["predictions"]["anomaly_score"] = [0.1, 2.0, None]
    raw["predictions"]["timestamp"][0] = WIRE[1]
    assert [(e.field, e.message) for e in details(raw)] == [
        ("predictions[0].timestamp", "does not match the reading at this position"),
        ("predictions[1].anomaly_score", "must be a number in [0, 1]"),
        ("predictions[2].anomaly_score", "must be a number in [0, 1]"),
    ]


def test_parse_device_result_names_a_missing_field_and_a_non_object():
    raw = answer()
    del raw["predictions"][0]["is_anomaly"]
    raw["predictions"][2] = [1]
    assert [(e.field, e.message) for e in details(raw)] == [
        ("predictions[0].is_anomaly", "must be a boolean"),
        ("predictions[2]", "must be an object"),
    ]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ([], ("devices[]", "must be an object")),
        ({**answer(), "device_id": "b"}, ("device_id", "expected 'a'")),
        ({**answer(), "state": None}, ("state", "must be an object")),
        ({**answer(), "state": {"x": math.nan}}, ("state", "must be plain JSON (finite numbers)")),
        (
            {**answer(), "state": {"x": [None, -math.inf]}},
            ("state", "must be plain JSON (finite numbers)"),
        ),
        ({**answer(), "state": {"x": {1, 2}}}, ("state", "must be plain JSON (finite numbers)")),
        (
            {**answer(), "predictions": 7},
            ("predictions", "must be an object of columns, or an array of predictions"),
        ),
        (answer(2), ("predictions", "2 predictions for 3 readings")),
    ],
)
def test_parse_device_result_rejects_a_broken_answer(raw, expected):
    assert [(e.field, e.message) for e in details(raw)] == [expected]


def test_parse_device_result_returns_a_copy_of_the_state():
    raw = answer()
    result = parse_device_result(raw, readings(), "v1")
    raw["state"]["seen"] = 99
    assert result.state == {"seen": 3}


@pytest.mark.parametrize(
    ("state", "text"),
    [
        ({"x": None, "y": "null"}, '{"x":null,"y":"null"}'),
        ({"big": 2**70}, '{"big":1180591620717411303424}'),
        ({1: 0.5}, '{"1":0.5}'),
    ],
)
def test_parse_device_result_keeps_a_state_the_fast_encoder_cannot_judge(state, text):
    result = parse_device_result({**answer(), "state": state}, readings(), "v1")
    assert result.state_json == text


def test_parse_device_result_checks_answers_against_the_stamps_sent():
    stamps = ["2026-11-27T06:00:00.000Z", "2026-11-27T06:00:10.000Z", "2026-11-27T06:00:20.000Z"]
    result = parse_device_result(answer(), readings(), "v1", stamps=stamps)
    assert result == DeviceResult("a", {"seen": 3}, [prediction(0), prediction(1), prediction(2)])
    assert result.state_json == '{"seen":3}'


@pytest.mark.parametrize("where", [0, 2])
def test_parse_device_result_finds_a_non_finite_value_anywhere_in_a_column(where):
    raw = answer()
    raw["predictions"][where]["failure_probability"] = math.nan
    raw["predictions"][2 - where]["anomaly_score"] = math.inf
    assert {(e.field, e.message) for e in details(raw)} == {
        (f"predictions[{2 - where}].anomaly_score", "must be a number in [0, 1]"),
        (f"predictions[{where}].failure_probability", "must be a number in [0, 1] or null"),
    }


def test_parse_device_result_integer_probabilities_become_floats():
    raw = answer()
    raw["predictions"][0]["failure_probability"] = 0
    result = parse_device_result(raw, readings(), "v1")
    assert result.predictions[0] == prediction(0, failure_probability=0.0)
    assert type(result.predictions[0].failure_probability) is float


def test_parse_device_result_of_no_readings_in_columns_is_the_state_alone():
    raw = {"device_id": "a", "state": {"seen": 0}, "predictions": {key: [] for key in CORE_FIELDS}}
    assert parse_device_result(raw, [], "v1") == DeviceResult("a", {"seen": 0}, [])


def test_parse_device_result_of_no_readings_is_the_state_alone():
    raw = {"device_id": "a", "state": {"seen": 0}, "predictions": []}
    assert parse_device_result(raw, [], "v1") == DeviceResult("a", {"seen": 0}, [])
