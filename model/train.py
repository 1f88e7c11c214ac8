"""Train the failure predictor on a simulated fleet and write ``failure.json``.

``python -m model.train --data data/train --out model/artifacts`` scores every device's whole
stream through :func:`model.detector.score_device` (the same trend features as at scoring
time), keeps every ``--every``-th reading that is ready and not failed, and per metric set fits
gradient-boosted trees (scikit-learn, training only) to "fails within ``--horizon-h``". Devices,
not readings, are split into training and validation, so a device's degradation is never seen
on both sides. The trees are exported as plain arrays (:mod:`model.failure` evaluates them with
numpy), calibrated by a logistic fit of their raw score on the validation devices, and the
``maintenance_due`` threshold is the probability that maximises F1 of "fails within the
horizon" there. Every validation figure is computed through the exported artifact itself.

Deterministic: the same data and seed give a byte-identical file (sorted keys, rounded floats,
no run timestamps).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from model.detector import score_device
from model.failure import (
    ARTIFACT_NAME,
    ARTIFACT_VERSION,
    FailureModel,
    design_matrix,
    design_names,
    parse_artifact,
)

__all__ = ["DeviceRows", "main", "train"]

# Gradient boosting settings: shallow trees (interactions of two or three trend features are
# what a degradation looks like), enough of them to reach the plateau on validation.
BOOSTING = {
    "max_iter": 100,
    "max_depth": 3,
    "learning_rate": 0.1,
    "min_samples_leaf": 100,
    "l2_regularization": 1.0,
}
THRESHOLD_RULE = "maximises F1 of 'fails within horizon' on validation rows"


@dataclass
class DeviceRows:
    """One device's subsampled readings: trend features and labels, in time order."""

    device: str
    metrics: list[str]  # the state's metric names: the columns of ``features``
    t_ms: np.ndarray
    features: np.ndarray
    ready: np.ndarray
    minutes_to_failure: np.ndarray
    t_end: int  # last reading of the device in the data (a failure after it is not observed)


def _round(x: float, digits: int = 9) -> float:
    """Round to ``digits`` significant digits, so the file is short and stable."""
    return float(f"{float(x):.{digits}g}")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class _Task(NamedTuple):
    """One device's whole stream, and which of its readings to keep."""

    device: str
    metrics: list[str]
    t_ms: np.ndarray
    x: np.ndarray
    keep: np.ndarray
    minutes_to_failure: np.ndarray


def _score_one(task: _Task) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Score a device's full stream; return its state's names and the kept rows' features."""
    state, scores = score_device(None, task.metrics, task.t_ms, task.x.astype(np.float64))
    return state.names, scores.features[task.keep], scores.ready[task.keep]


def _device_tasks(data: Path, every: int) -> Iterator[_Task]:
    """Yield the scoring task of every device, kind by kind."""
    manifest = json.loads((data / "manifest.json").read_text(encoding="utf-8"))
    for kind in sorted(manifest["kinds"]):
        spec = manifest["kinds"][kind]
        with np.load(data / spec["file"]) as z:
            metrics = [str(m) for m in z["metric_names"]]
            ids = [str(d) for d in z["device_ids"]]
            dev = z["device"]
            t_all = z["timestamp_ms"]
            x_all = np.stack([z[m] for m in metrics], axis=1)
            mtf_all = z["minutes_to_failure"]
        order = np.argsort(dev, kind="stable")  # stable: each device's rows stay in time order
        bounds = np.searchsorted(dev[order], np.arange(len(ids) + 1))
        for d, device in enumerate(ids):
            rows = order[bounds[d] : bounds[d + 1]]
            if rows.size:
                keep = np.arange(rows.size) % every == 0
                yield _Task(device, metrics, t_all[rows], x_all[rows], keep, mtf_all[rows])


def extract(data: Path, every: int, jobs: int) -> tuple[list[DeviceRows], dict[str, Any]]:
    """Score every device of the fleet in ``data``; return its rows and a manifest summary."""
    manifest = json.loads((data / "manifest.json").read_text(encoding="utf-8"))
    tasks = list(_device_tasks(data, every))
    start = time.monotonic()
    out: list[DeviceRows] = []
    pool = ProcessPoolExecutor(max_workers=jobs) if jobs > 1 else None
    results = pool.map(_score_one, tasks) if pool else map(_score_one, tasks)
    try:
        for i, (names, feats, ready) in enumerate(results):
            task = tasks[i]
            mtf, t_kept = task.minutes_to_failure[task.keep], task.t_ms[task.keep]
            t_end = int(task.t_ms.max())
            out.append(DeviceRows(task.device, names, t_kept, feats, ready, mtf, t_end))
            if (i + 1) % 10 == 0 or i + 1 == len(tasks):
                _log(f"scored {i + 1}/{len(tasks)} devices, {time.monotonic() - start:.1f} s")
    finally:
        if pool:
            pool.shutdown()
    summary = {
        key: manifest[key] for key in ("seed", "devices", "days", "interval_s", "readings")
    } | {
        "kinds": {
            kind: {"devices": len(spec["devices"]), "metrics": spec["metrics"]}
            for kind, spec in sorted(manifest["kinds"].items())
        }
    }
    return out, summary


def _split(devices: Sequence[str], seed: int, fraction: float) -> set[str]:
    """Pick the validation devices: a seeded shuffle of the sorted ids, at least one."""
    ids = sorted(devices)
    rng = np.random.default_rng(seed)
    n_val = max(1, round(len(ids) * fraction))
    return {ids[i] for i in rng.permutation(len(ids))[:n_val]}


def _usable(rows: DeviceRows) -> np.ndarray:
    """Rows that train and validate: ready, and not while failed."""
    return rows.ready & (rows.minutes_to_failure != 0)


def _stack(group: list[DeviceRows], horizon_min: float) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for r in group:
        use = _usable(r)
        xs.append(design_matrix(r.metrics, r.features[use]))
        mtf = r.minutes_to_failure[use]
        ys.append((mtf > 0) & (mtf <= horizon_min))
    return np.concatenate(xs), np.concatenate(ys)


def _export_trees(clf: Any) -> dict[str, Any]:
    """Flatten a fitted binary HistGradientBoostingClassifier into node arrays."""
    out: dict[str, list[Any]] = {k: [] for k in ("roots", "feature", "threshold", "left")}
    out |= {k: [] for k in ("right", "value", "missing_left")}
    for (tree,) in clf._predictors:
        nodes = tree.nodes
        base = len(out["feature"])
        out["roots"].append(base)
        for nd in nodes:
            leaf = bool(nd["is_leaf"])
            out["feature"].append(-1 if leaf else int(nd["feature_idx"]))
            out["threshold"].append(0.0 if leaf else _round(nd["num_threshold"]))
            out["left"].append(-1 if leaf else base + int(nd["left"]))
            out["right"].append(-1 if leaf else base + int(nd["right"]))
            out["value"].append(_round(nd["value"]) if leaf else 0.0)
            out["missing_left"].append(0 if leaf else int(nd["missing_go_to_left"]))
    baseline = float(np.asarray(clf._baseline_prediction).ravel()[0])
    return {"baseline": _round(baseline)} | out


def _fit_logistic(raw: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Fit ``sigmoid(a * raw + b)`` to ``y`` by Newton steps (deterministic, no library)."""
    a, b = 1.0, 0.0
    x = np.stack([raw, np.ones_like(raw)], axis=1)
    yf = y.astype(np.float64)
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-np.clip(a * raw + b, -50, 50)))
        w = p * (1 - p) + 1e-12
        grad = x.T @ (p - yf)
        hess = (x * w[:, None]).T @ x + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        a, b = a - float(step[0]), b - float(step[1])
        if np.abs(step).max() < 1e-10:
            break
    return a, b


def _best_f1(prob: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    """Return the threshold maximising F1, and its precision, recall and F1."""
    order = np.argsort(-prob, kind="stable")
    p, yy = prob[order], y[order].astype(np.int64)
    tp = np.cumsum(yy)
    fp = np.cumsum(1 - yy)
    last = np.r_[np.flatnonzero(np.diff(p)), p.size - 1]  # the last row of each distinct value
    tp, fp = tp[last], fp[last]
    pos = max(int(yy.sum()), 1)
    f1 = 2 * tp / (tp + fp + pos)
    i = int(np.argmax(f1))
    return float(p[last][i]), float(tp[i] / (tp[i] + fp[i])), float(tp[i] / pos), float(f1[i])


def _auc(prob: np.ndarray, y: np.ndarray) -> float | None:
    """ROC AUC rounded for the artifact; ``None`` when the rows hold one class only."""
    from sklearn.metrics import roc_auc_score

    return _round(float(roc_auc_score(y, prob)), 4) if 0 < y.sum() < y.size else None


def lead_times(model: FailureModel, group: list[DeviceRows]) -> list[float | None]:
    """Per failure observed in the data: hours from the first alarm of its degradation to it.

    ``None`` when ``maintenance_due`` never turned on before the failure (a missed failure).
    """
    leads: list[float | None] = []
    for r in group:
        pred = model.predict(r.metrics, r.features, r.ready)
        if pred is None:
            continue
        _, due = pred
        mtf = r.minutes_to_failure.astype(np.float64)
        coming = mtf > 0
        # A degradation is a run of rows counting down; a new one starts after a gap (failed,
        # repaired) or where the countdown jumps up.
        prev_mtf = np.r_[np.inf, mtf[:-1]]
        prev_coming = np.r_[False, coming[:-1]]
        episode = np.cumsum(coming & ~(prev_coming & (mtf <= prev_mtf)))
        for e in np.unique(episode[coming]):
            rows = np.flatnonzero(coming & (episode == e))
            last = rows[-1]
            if r.t_ms[last] + mtf[last] * 60_000.0 > r.t_end:
                continue  # the failure is after the end of the data: not observed
            warned = rows[due[rows]]
            leads.append(float(mtf[warned[0]]) / 60.0 if warned.size else None)
    return leads


def _lead_summary(leads: list[float | None]) -> dict[str, Any]:
    warned = [h for h in leads if h is not None]
    return {
        "failures": len(leads),
        "warned": len(warned),
        "median_lead_h": _round(float(np.median([h or 0.0 for h in leads])), 4) if leads else None,
        "median_lead_h_warned": _round(float(np.median(warned)), 4) if warned else None,
    }


def train(
    data: Path,
    out: Path,
    *,
    seed: int = 0,
    horizon_h: float = 24.0,
    every: int = 30,
    val_fraction: float = 0.25,
    jobs: int = 1,
    boosting: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train on the fleet in ``data``, write ``out/failure.json``; return the artifact."""
    rows, summary = extract(data, every, jobs)
    artifact = fit(
        rows,
        seed=seed,
        horizon_h=horizon_h,
        val_fraction=val_fraction,
        boosting=boosting,
    )
    artifact["training"] |= {"every": every, "data": summary}
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(artifact, sort_keys=True, separators=(",", ":")) + "\n"
    (out / ARTIFACT_NAME).write_text(text, encoding="utf-8")
    return artifact


def fit(
    rows: list[DeviceRows],
    *,
    seed: int = 0,
    horizon_h: float = 24.0,
    val_fraction: float = 0.25,
    boosting: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit, calibrate and validate one predictor per metric set; return the artifact."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    params = dict(BOOSTING if boosting is None else boosting)
    groups: dict[tuple[str, ...], list[DeviceRows]] = {}
    for r in rows:
        groups.setdefault(tuple(sorted(r.metrics)), []).append(r)
    horizon_min = horizon_h * 60.0
    predictors: list[dict[str, Any]] = []
    val_groups: list[list[DeviceRows]] = []
    for metrics, group in sorted(groups.items()):
        val_ids = _split([r.device for r in group], seed, val_fraction)
        tr = [r for r in group if r.device not in val_ids]
        va = [r for r in group if r.device in val_ids]
        x_tr, y_tr = _stack(tr, horizon_min)
        x_va, y_va = _stack(va, horizon_min)
        if not 0 < y_tr.sum() < y_tr.size:
            _log(f"skipped {list(metrics)}: the training rows have one class only")
            continue
        clf = HistGradientBoostingClassifier(**params, early_stopping=False, random_state=seed)
        with threadpool_limits(1):  # one thread: the same sums in the same order, every run
            clf.fit(x_tr, y_tr)
        doc = {
            "metrics": list(metrics),
            "features": design_names(metrics),
            "trees": _export_trees(clf),
            "calibration": {"method": "logistic", "a": 1.0, "b": 0.0},
            "maintenance_due": {"threshold": 0.5, "rule": THRESHOLD_RULE},
        }
        raw = parse_artifact(_artifact([doc], horizon_h, {})).predictors[frozenset(metrics)]
        raw_va = raw.trees.raw(x_va)
        gap = float(np.abs(raw_va - clf.decision_function(x_va)).max(initial=0.0))
        if gap > 1e-4:
            raise RuntimeError(f"exported trees differ from scikit-learn's by {gap:g}")
        a, b = _fit_logistic(raw_va, y_va)
        doc["calibration"] |= {"a": _round(a), "b": _round(b)}
        prob = parse_artifact(_artifact([doc], horizon_h, {})).predictors[frozenset(metrics)]
        p_va = prob.calibrated(prob.trees.raw(x_va))
        thr, precision, recall, f1 = _best_f1(p_va, y_va)
        doc["maintenance_due"]["threshold"] = _round(thr, 6)
        model = parse_artifact(_artifact([doc], horizon_h, {}))
        val = {
            "devices": len(va),
            "rows": int(y_va.size),
            "positives": int(y_va.sum()),
            "roc_auc": _auc(p_va, y_va),
            "precision": _round(precision, 4),
            "recall": _round(recall, 4),
            "f1": _round(f1, 4),
            "healthy_alarm_rate": _round(float((p_va[~y_va] >= thr).mean()), 4),
        } | _lead_summary(lead_times(model, va))
        doc["training"] = {"devices": len(tr), "rows": int(y_tr.size), "positives": int(y_tr.sum())}
        doc["validation"] = val
        predictors.append(doc)
        val_groups.append(va)
        _log(
            f"{'/'.join(metrics)}: validation AUC {val['roc_auc']}, threshold "
            f"{doc['maintenance_due']['threshold']}, median lead {val['median_lead_h']} h "
            f"({val['warned']}/{val['failures']} failures warned)"
        )
    if not predictors:
        raise ValueError("no metric set has both failing and healthy training rows: more data")
    artifact = _artifact(predictors, horizon_h, {})
    model = parse_artifact(artifact)
    p_all, y_all, leads = [], [], []
    for va in val_groups:
        for r in va:
            use = _usable(r)
            pred = model.predict(r.metrics, r.features[use], r.ready[use])
            assert pred is not None
            p_all.append(pred[0])
            mtf = r.minutes_to_failure[use]
            y_all.append((mtf > 0) & (mtf <= horizon_min))
        leads += lead_times(model, va)
    p_cat, y_cat = np.concatenate(p_all), np.concatenate(y_all)
    overall = {"roc_auc": _auc(p_cat, y_cat)} | _lead_summary(leads)
    overall["healthy_alarm_rate"] = _round(float(model_due_rate(model, val_groups, horizon_min)), 4)
    artifact["training"] = {
        "seed": seed,
        "validation_fraction": val_fraction,
        "boosting": params,
        "threshold_rule": THRESHOLD_RULE,
        "lead_time": "hours from the first maintenance_due in a degradation to its failure; "
        "median_lead_h counts a missed failure as 0 h",
        "validation": overall,
    }
    return artifact


def model_due_rate(
    model: FailureModel, groups: list[list[DeviceRows]], horizon_min: float
) -> float:
    """Share of usable validation rows with no failure within the horizon that raise an alarm."""
    alarms = total = 0
    for group in groups:
        for r in group:
            use = _usable(r)
            pred = model.predict(r.metrics, r.features[use], r.ready[use])
            assert pred is not None
            mtf = r.minutes_to_failure[use]
            neg = ~((mtf > 0) & (mtf <= horizon_min))
            alarms += int(pred[1][neg].sum())
            total += int(neg.sum())
    return alarms / max(total, 1)


def _artifact(predictors: list[dict[str, Any]], horizon_h: float, meta: dict) -> dict[str, Any]:
    return {
        "version": ARTIFACT_VERSION,
        "horizon_h": horizon_h,
        "predictors": predictors,
        "training": meta,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m model.train",
        description="Train the failure predictor on a simulated fleet (python -m simulator "
        "generate) and write <out>/failure.json. Deterministic: the same data and seed give "
        "a byte-identical file.",
        epilog="Progress goes to stderr; the validation figures (ROC AUC, maintenance_due "
        "thresholds, median warning lead time) to stdout and into the artifact.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        default=argparse.SUPPRESS,
        help="directory written by 'python -m simulator generate' (manifest.json, <kind>.npz)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        default=argparse.SUPPRESS,
        help="directory to write failure.json into (created if missing)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and the trees")
    parser.add_argument(
        "--horizon-h", type=float, default=24.0, help="predict a failure within this many hours"
    )
    parser.add_argument(
        "--every",
        type=int,
        default=30,
        help="keep every N-th reading per device (features change once per 5-minute bucket)",
    )
    parser.add_argument(
        "--validation-fraction", type=float, default=0.25, help="share of devices held out"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="processes scoring devices (the output does not depend on it)",
    )
    args = parser.parse_args(argv)
    if not (args.data / "manifest.json").is_file():
        parser.error(f"--data: no manifest.json in {args.data} (run python -m simulator generate)")
    if args.every < 1 or args.horizon_h <= 0 or not 0 < args.validation_fraction < 1:
        parser.error("--every must be >= 1, --horizon-h > 0, --validation-fraction in (0, 1)")
    start = time.monotonic()
    artifact = train(
        args.data,
        args.out,
        seed=args.seed,
        horizon_h=args.horizon_h,
        every=args.every,
        val_fraction=args.validation_fraction,
        jobs=args.jobs,
    )
    v = artifact["training"]["validation"]
    devices = sum(p["validation"]["devices"] for p in artifact["predictors"])
    print(f"validation on {devices} held-out devices, horizon {args.horizon_h:g} h:")
    print(f"  ROC AUC {v['roc_auc']} (all metric sets pooled)")
    for p in artifact["predictors"]:
        pv = p["validation"]
        print(
            f"  {','.join(p['metrics'])}: AUC {pv['roc_auc']}, maintenance_due threshold "
            f"{p['maintenance_due']['threshold']} (precision {pv['precision']}, "
            f"recall {pv['recall']})"
        )
    print(f"  threshold rule: {THRESHOLD_RULE}")
    print(
        f"  median lead {v['median_lead_h']} h over {v['failures']} failures "
        f"({v['warned']} warned; a missed failure counts 0 h); healthy-row alarm rate "
        f"{v['healthy_alarm_rate']}"
    )
    _log(f"wrote {args.out / ARTIFACT_NAME} in {time.monotonic() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
