"""Failure predictor: training is deterministic, the JSON artifact loads and predicts by name."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from model.detector import score_device, trend_feature_names
from model.failure import (
    ARTIFACT_NAME,
    ArtifactError,
    FailureModel,
    design_names,
    load_failure_model,
)
from model.train import main, train
from simulator.fleet import METRICS, Fleet, FleetConfig, kind_metrics
from simulator.generate import generate

START = datetime(2026, 1, 1, tzinfo=UTC)
ARTIFACTS = Path(__file__).resolve().parents[2] / "model" / "artifacts"
TINY_BOOSTING = {"max_iter": 5, "max_depth": 2, "learning_rate": 0.3, "min_samples_leaf": 5}


@pytest.fixture(scope="module")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, bytes]:
    """Train twice on one small fleet (minute readings, frequent failures)."""
    root = tmp_path_factory.mktemp("failure")
    config = FleetConfig(devices=6, seed=3, interval_s=60.0, degradation_per_day=3.0)
    generate(config, days=2.5, out=root / "data", start=START)
    outputs = []
    for run in ("a", "b"):
        train(root / "data", root / run, seed=0, every=3, jobs=1, boosting=TINY_BOOSTING)
        outputs.append((root / run / ARTIFACT_NAME).read_bytes())
    return root / "a", outputs[0], outputs[1]


def device_features(kind: str, seed: int = 0) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Trend features of one simulated device of ``kind`` over a day and a half."""
    fleet = Fleet(FleetConfig(devices=3, seed=seed, interval_s=60.0), start=START)
    chunk = fleet.simulate(36 * 60)
    d = fleet.kinds.index(kind)
    names = [m for i, m in enumerate(METRICS) if fleet.has[i, d]]
    x = np.stack([chunk.values[m][:, d] for m in names], axis=1).astype(np.float64)
    x[~chunk.present[:, d]] = np.nan
    state, scores = score_device(None, names, chunk.times_ms, x)
    return state.names, scores.features, scores.ready


@pytest.fixture(scope="module")
def committed() -> FailureModel:
    return load_failure_model(ARTIFACTS)


def test_training_twice_gives_identical_bytes(tiny_artifact: tuple[Path, bytes, bytes]) -> None:
    _, first, second = tiny_artifact
    assert first == second
    doc = json.loads(first)
    assert doc["version"] == 1
    assert doc["horizon_h"] == 24.0
    assert doc["training"]["seed"] == 0
    assert doc["training"]["data"]["devices"] == 6


def test_round_trip_predicts_one_row_each(tiny_artifact: tuple[Path, bytes, bytes]) -> None:
    model = load_failure_model(tiny_artifact[0])
    assert model.predictors
    for key, predictor in model.predictors.items():
        names = sorted(key)
        f = np.abs(np.random.default_rng(0).normal(size=(7, len(trend_feature_names(names)))))
        out = model.predict(names, f, np.ones(7, dtype=bool))
        assert out is not None
        prob, due = out
        assert prob.shape == (7,)
        assert due.shape == (7,)
        assert due.dtype == bool
        assert ((prob >= 0) & (prob <= 1)).all()
        assert (due == (prob >= predictor.threshold)).all()


def test_no_artifact_is_an_empty_model(tmp_path: Path) -> None:
    for model in (load_failure_model(tmp_path), load_failure_model(None)):
        assert model.predict(["a"], np.zeros((2, 6)), np.ones(2, dtype=bool)) is None


def test_unknown_metric_set_is_none(committed: FailureModel) -> None:
    names = [*kind_metrics("fan"), "humidity"]
    f = np.zeros((3, len(trend_feature_names(names))))
    assert committed.predict(names, f, np.ones(3, dtype=bool)) is None
    fewer = list(kind_metrics("fan"))[:3]
    f = np.zeros((3, len(trend_feature_names(fewer))))
    assert committed.predict(fewer, f, np.ones(3, dtype=bool)) is None


def test_metric_order_does_not_matter(committed: FailureModel) -> None:
    names, features, ready = device_features("pump")
    cols = trend_feature_names(names)
    shuffled = list(reversed(names))
    index = [cols.index(c) for c in trend_feature_names(shuffled)]
    a = committed.predict(names, features, ready)
    b = committed.predict(shuffled, features[:, index], ready)
    assert a is not None
    assert b is not None
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_rows_not_ready_are_nan_and_not_due(committed: FailureModel) -> None:
    names = list(kind_metrics("compressor"))
    f = np.full((4, len(trend_feature_names(names))), 5.0)
    ready = np.array([True, False, True, False])
    out = committed.predict(names, f, ready)
    assert out is not None
    prob, due = out
    assert np.isnan(prob[~ready]).all()
    assert np.isfinite(prob[ready]).all()
    assert not due[~ready].any()


@pytest.mark.parametrize("kind", ["pump", "compressor", "fan"])
def test_committed_artifact_predicts_every_kind(committed: FailureModel, kind: str) -> None:
    assert committed.horizon_h == 24.0
    names, features, ready = device_features(kind, seed=1)
    assert ready.any()
    assert not ready.all()
    out = committed.predict(names, features, ready)
    assert out is not None
    prob, due = out
    assert ((prob[ready] >= 0) & (prob[ready] <= 1)).all()
    assert np.isnan(prob[~ready]).all()
    assert due.shape == ready.shape


def _corrupt(tmp_path: Path, doc: object) -> Path:
    (tmp_path / ARTIFACT_NAME).write_text(json.dumps(doc), encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(version=99), "version"),
        (lambda d: d.pop("horizon_h"), "horizon_h"),
        (lambda d: d.update(predictors=[]), "predictors"),
        (lambda d: d["predictors"][0].update(features=["x"]), "predictors[0].features"),
        (lambda d: d["predictors"][0]["trees"]["left"].pop(), "predictors[0].trees.left"),
        (lambda d: d["predictors"][0]["trees"].update(roots=[10**9]), "trees.roots"),
        (lambda d: d["predictors"][0]["trees"]["threshold"].__setitem__(0, "x"), "threshold"),
        (lambda d: d["predictors"][0].pop("calibration"), "predictors[0].calibration"),
        (lambda d: d["predictors"][0]["maintenance_due"].update(threshold=2), "maintenance_due"),
        (lambda d: d["predictors"].append(d["predictors"][0]), "duplicate metric set"),
    ],
)
def test_malformed_artifact_names_the_problem(
    tmp_path: Path, tiny_artifact: tuple[Path, bytes, bytes], change: object, message: str
) -> None:
    doc = json.loads(tiny_artifact[1])
    change(doc)  # type: ignore[operator]
    with pytest.raises(ArtifactError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_failure_model(_corrupt(tmp_path, doc))


def test_artifact_that_is_not_json_names_the_file(tmp_path: Path) -> None:
    (tmp_path / ARTIFACT_NAME).write_text("{not json", encoding="utf-8")
    with pytest.raises(ArtifactError, match=r"failure\.json: not valid JSON"):
        load_failure_model(tmp_path)


def test_design_names_ignore_metric_order() -> None:
    assert design_names(["b", "a"]) == design_names(["a", "b"])
    assert len(set(design_names(["a", "b"]))) == len(design_names(["a", "b"]))


def test_command_line_rejects_a_directory_without_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--data", str(tmp_path), "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    assert "manifest.json" in capsys.readouterr().err


def test_load_finds_the_artifact_one_folder_down_as_azure_ml_mounts_it(tmp_path: Path) -> None:
    (tmp_path / "artifacts").mkdir()
    (tmp_path / "artifacts" / ARTIFACT_NAME).write_bytes((ARTIFACTS / ARTIFACT_NAME).read_bytes())
    names = list(kind_metrics("pump"))
    model = load_failure_model(tmp_path)
    features = np.zeros((1, len(trend_feature_names(names))))
    assert model.predict(names, features, np.ones(1, bool)) is not None
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / ARTIFACT_NAME).write_bytes((ARTIFACTS / ARTIFACT_NAME).read_bytes())
    with pytest.raises(ArtifactError, match="more than one"):
        load_failure_model(tmp_path)
