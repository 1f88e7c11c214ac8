"""Failure predictor: the probability that a device fails within the horizon, from its trend.

The artifact ``failure.json`` (written by :mod:`model.train`) is plain JSON, evaluated here with
numpy only: no scikit-learn at scoring time. Per metric *set* (a device's metric names, in any
order) it holds gradient-boosted trees over :func:`design_names` (the detector's trend features
plus a few derived from them, computed by :func:`design_matrix` in training and scoring alike),
a logistic calibration of their raw score, and the ``maintenance_due`` threshold chosen on
validation devices. With no artifact, or for a metric set it was not trained on,
:meth:`FailureModel.predict` returns ``None`` and the response carries ``null``, never a
made-up number. A malformed artifact is a deployment error: :func:`load_failure_model` raises
:class:`ArtifactError` naming what is wrong.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.detector import trend_feature_names
from model.state import TREND_SCALES

__all__ = [
    "ARTIFACT_NAME",
    "ARTIFACT_VERSION",
    "ArtifactError",
    "FailureModel",
    "Predictor",
    "TreeEnsemble",
    "design_matrix",
    "design_names",
    "load_failure_model",
    "parse_artifact",
]

ARTIFACT_NAME = "failure.json"
ARTIFACT_VERSION = 1
_TREE_KEYS = ("feature", "threshold", "left", "right", "value", "missing_left")


class ArtifactError(ValueError):
    """``failure.json`` cannot be trusted; the message names the offending field."""


def design_names(metrics: Sequence[str]) -> list[str]:
    """Name the predictor's input columns for a metric set (sorted, so order never matters).

    The detector's trend features, then derived ones the trees would otherwise need many
    splits for: per metric the change between the short and the long scale (``:dmean``,
    ``:drms``: a trend that is building up now), and over all metrics the largest absolute
    mean and rms per scale (``*:maxmean<s>``, ``*:maxrms<s>``) and ``*:ddev`` (short minus
    long deviate), which do not care which metric degrades.
    """
    ms = sorted(metrics)
    out = trend_feature_names(ms)
    out += [f"{m}:dmean" for m in ms] + [f"{m}:drms" for m in ms]
    for s in range(TREND_SCALES):
        out += [f"*:maxmean{s}", f"*:maxrms{s}"]
    out.append("*:ddev")
    return out


def design_matrix(names: Sequence[str], features: np.ndarray) -> np.ndarray:
    """Return the columns of :func:`design_names` for trend ``features`` of metrics ``names``.

    Args:
        names: The device state's metric names, in the order the detector used.
        features: ``DeviceScores.features``, shape ``(n, F)``.
    """
    col = {f: i for i, f in enumerate(trend_feature_names(list(names)))}
    ms = sorted(names)
    base = np.asarray(features, dtype=np.float64)[:, [col[f] for f in trend_feature_names(ms)]]
    k = len(ms)
    width = 2 * k + 1  # per scale: means, rms, deviate
    mean = [base[:, s * width : s * width + k] for s in range(TREND_SCALES)]
    rms = [base[:, s * width + k : s * width + 2 * k] for s in range(TREND_SCALES)]
    dev = [base[:, s * width + 2 * k] for s in range(TREND_SCALES)]
    parts = [base, mean[0] - mean[-1], rms[0] - rms[-1]]
    for s in range(TREND_SCALES):
        parts += [np.abs(mean[s]).max(axis=1)[:, None], rms[s].max(axis=1)[:, None]]
    parts.append((dev[0] - dev[-1])[:, None])
    return np.concatenate(parts, axis=1)


@dataclass(frozen=True)
class TreeEnsemble:
    """Binary trees as flat node arrays, summed into one raw (logit) score.

    A node goes left when its feature is ``<= threshold`` (or is NaN and ``missing_left``); a
    leaf has ``left == -1`` and contributes ``value``. ``roots`` index each tree's first node.
    """

    baseline: float
    roots: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray
    missing_left: np.ndarray
    depth: int

    def raw(self, x: np.ndarray, chunk: int = 4096) -> np.ndarray:
        """Return the raw score of rows ``x`` (n, F), walking every tree at once."""
        out = np.full(x.shape[0], self.baseline)
        leaf = self.left < 0
        for lo in range(0, x.shape[0], chunk):
            xs = x[lo : lo + chunk]
            rows = np.arange(xs.shape[0])[:, None]
            node = np.broadcast_to(self.roots, (xs.shape[0], self.roots.size)).copy()
            for _ in range(self.depth):
                v = xs[rows, np.maximum(self.feature[node], 0)]
                go_left = np.where(np.isnan(v), self.missing_left[node], v <= self.threshold[node])
                nxt = np.where(go_left, self.left[node], self.right[node])
                node = np.where(leaf[node], node, nxt)
            out[lo : lo + chunk] += self.value[node].sum(axis=1)
        return out


@dataclass(frozen=True)
class Predictor:
    """The failure predictor of one metric set."""

    metrics: tuple[str, ...]
    features: tuple[str, ...]
    trees: TreeEnsemble
    calibration: tuple[float, float]  # probability = sigmoid(a * raw + b)
    threshold: float

    def probability(self, names: Sequence[str], features: np.ndarray) -> np.ndarray:
        """Return the calibrated failure probability of every row (ready or not)."""
        return self.calibrated(self.trees.raw(design_matrix(names, features)))

    def calibrated(self, raw: np.ndarray) -> np.ndarray:
        """Map the trees' raw score to a probability."""
        a, b = self.calibration
        return 1.0 / (1.0 + np.exp(-np.clip(a * raw + b, -50.0, 50.0)))


class FailureModel:
    """Per metric set predictors loaded from ``failure.json``; empty means "no predictor"."""

    def __init__(
        self,
        predictors: Mapping[frozenset[str], Predictor] | None = None,
        horizon_h: float = 24.0,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        self.predictors = dict(predictors or {})
        self.horizon_h = horizon_h
        self.meta = dict(meta or {})

    def predict(
        self, names: list[str], features: np.ndarray, ready: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Return ``(probability, maintenance_due)`` per row, or ``None`` for an unknown set.

        Args:
            names: The device state's metric names (the columns ``features`` describe, see
                :func:`model.detector.trend_feature_names`).
            features: Trend features per reading, shape ``(n, F)``.
            ready: Per reading, whether the trend has enough history; rows that are not ready
                get NaN probability (``null`` in the response) and no maintenance due.
        """
        predictor = self.predictors.get(frozenset(names))
        if predictor is None:
            return None
        ready = np.asarray(ready, dtype=bool)
        prob = np.full(ready.shape[0], np.nan)
        rows = np.flatnonzero(ready)
        if rows.size:
            # Features change once per detector bucket: evaluate each run of equal rows once.
            f = np.asarray(features, dtype=np.float64)[rows]
            new = np.ones(rows.size, dtype=bool)
            new[1:] = (f[1:] != f[:-1]).any(axis=1)
            prob[rows] = predictor.probability(names, f[new])[np.cumsum(new) - 1]
        due = ready & (np.nan_to_num(prob, nan=0.0) >= predictor.threshold)
        return prob, due


def load_failure_model(model_dir: str | Path | None) -> FailureModel:
    """Load ``<model_dir>/failure.json``; an empty model when there is none.

    Azure ML mounts a model registered from a folder under that folder's name
    (``$AZUREML_MODEL_DIR/artifacts/failure.json`` for ``path: ../artifacts``), so one level
    of subfolders is searched too when the file is not at the top.

    Raises:
        ArtifactError: The file exists but is not a valid artifact (named in the message), or
            several subfolders hold one (which to use would be a guess).
    """
    if model_dir is None:
        return FailureModel()
    path = Path(model_dir) / ARTIFACT_NAME
    if not path.is_file():
        nested = sorted(Path(model_dir).glob(f"*/{ARTIFACT_NAME}"))
        if len(nested) > 1:
            found = ", ".join(str(p) for p in nested)
            raise ArtifactError(f"{model_dir}: more than one {ARTIFACT_NAME} ({found})")
        if not nested:
            return FailureModel()
        path = nested[0]
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc})") from exc
    try:
        return parse_artifact(doc)
    except ArtifactError as exc:
        raise ArtifactError(f"{path}: {exc}") from exc


def parse_artifact(doc: object) -> FailureModel:
    """Build a :class:`FailureModel` from a parsed artifact, checking every field.

    Raises:
        ArtifactError: naming the first field that is missing or wrong.
    """
    if not isinstance(doc, Mapping):
        raise ArtifactError("$: must be a JSON object")
    if doc.get("version") != ARTIFACT_VERSION:
        raise ArtifactError(f"version: must be {ARTIFACT_VERSION}, got {doc.get('version')!r}")
    horizon = _number(doc.get("horizon_h"), "horizon_h")
    if horizon <= 0:
        raise ArtifactError("horizon_h: must be positive")
    items = doc.get("predictors")
    if not isinstance(items, list) or not items:
        raise ArtifactError("predictors: must be a non-empty array")
    predictors: dict[frozenset[str], Predictor] = {}
    for i, item in enumerate(items):
        p = _predictor(item, f"predictors[{i}]")
        key = frozenset(p.metrics)
        if key in predictors:
            raise ArtifactError(f"predictors[{i}].metrics: duplicate metric set")
        predictors[key] = p
    return FailureModel(predictors, horizon, doc.get("training") or {})


def _number(value: object, at: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ArtifactError(f"{at}: must be a finite number, got {value!r}")
    return float(value)


def _predictor(item: object, at: str) -> Predictor:
    if not isinstance(item, Mapping):
        raise ArtifactError(f"{at}: must be an object")
    metrics = item.get("metrics")
    if (
        not isinstance(metrics, list)
        or not metrics
        or not all(isinstance(m, str) and m for m in metrics)
        or len(set(metrics)) != len(metrics)
    ):
        raise ArtifactError(f"{at}.metrics: must be an array of distinct metric names")
    features = item.get("features")
    expected = design_names(metrics)
    if features != expected:
        raise ArtifactError(
            f"{at}.features: do not match this code's design for {sorted(metrics)} "
            f"(expected {len(expected)} names starting {expected[:2]})"
        )
    trees = _trees(item.get("trees"), f"{at}.trees", len(expected))
    cal = item.get("calibration")
    if not isinstance(cal, Mapping) or cal.get("method") != "logistic":
        raise ArtifactError(f"{at}.calibration: must be {{'method': 'logistic', 'a', 'b'}}")
    a, b = (
        _number(cal.get("a"), f"{at}.calibration.a"),
        _number(cal.get("b"), f"{at}.calibration.b"),
    )
    due = item.get("maintenance_due")
    if not isinstance(due, Mapping):
        raise ArtifactError(f"{at}.maintenance_due: must be an object with a threshold")
    threshold = _number(due.get("threshold"), f"{at}.maintenance_due.threshold")
    if not 0.0 <= threshold <= 1.0:
        raise ArtifactError(f"{at}.maintenance_due.threshold: must be in [0, 1]")
    return Predictor(tuple(sorted(metrics)), tuple(expected), trees, (a, b), threshold)


def _trees(doc: object, at: str, n_features: int) -> TreeEnsemble:
    if not isinstance(doc, Mapping):
        raise ArtifactError(f"{at}: must be an object")
    baseline = _number(doc.get("baseline"), f"{at}.baseline")
    arrays: dict[str, np.ndarray] = {}
    for key in ("roots", *_TREE_KEYS):
        value = doc.get(key)
        if not isinstance(value, list) or not value:
            raise ArtifactError(f"{at}.{key}: must be a non-empty array")
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ArtifactError(f"{at}.{key}: must hold only numbers") from exc
        if arr.ndim != 1 or not np.isfinite(arr).all():
            raise ArtifactError(f"{at}.{key}: must be a flat array of finite numbers")
        arrays[key] = arr
    n = arrays["feature"].size
    for key in _TREE_KEYS:
        if arrays[key].size != n:
            raise ArtifactError(f"{at}.{key}: has {arrays[key].size} entries, 'feature' has {n}")
    ints = {
        k: arrays[k].astype(np.int64) for k in ("roots", "feature", "left", "right", "missing_left")
    }
    for k, v in ints.items():
        if (v != arrays[k]).any():
            raise ArtifactError(f"{at}.{k}: must hold integers")
    leaf = ints["left"] < 0
    inner = ~leaf
    if ((ints["roots"] < 0) | (ints["roots"] >= n)).any():
        raise ArtifactError(f"{at}.roots: node index out of range")
    for k in ("left", "right"):
        if ((ints[k][inner] < 0) | (ints[k][inner] >= n)).any():
            raise ArtifactError(f"{at}.{k}: node index out of range")
    if ((ints["feature"][inner] < 0) | (ints["feature"][inner] >= n_features)).any():
        raise ArtifactError(f"{at}.feature: index out of range of the {n_features} features")
    depth = _depth(ints["roots"], ints["left"], ints["right"], at)
    return TreeEnsemble(
        baseline,
        ints["roots"],
        ints["feature"],
        arrays["threshold"],
        ints["left"],
        ints["right"],
        arrays["value"],
        ints["missing_left"].astype(bool),
        depth,
    )


def _depth(roots: np.ndarray, left: np.ndarray, right: np.ndarray, at: str) -> int:
    """Return the deepest path; raise when a child points back up (a cycle, not a tree)."""
    depth, level, seen = 0, roots, np.zeros(left.size, dtype=bool)
    while level.size:
        if seen[level].any():
            raise ArtifactError(f"{at}: nodes are reached twice (not a forest of trees)")
        seen[level] = True
        inner = level[left[level] >= 0]
        level = np.concatenate([left[inner], right[inner]])
        depth += 1 if level.size else 0
    return depth
