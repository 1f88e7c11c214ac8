"""Two baseline anomaly scorers our detector is judged against, one device at a time.

* :func:`zscore_scores`: what a rule-of-thumb dashboard does. Mean and standard deviation per
  metric from the device's warm-up, then frozen; the score is the largest ``|z|`` over the
  metrics present in a reading.
* :func:`hst_scores`: River's ``HalfSpaceTrees`` behind its usual ``MinMaxScaler``, learning
  online (score, then learn, one reading at a time), seeded so runs repeat.

Both return raw scores (higher = more anomalous); their thresholds are chosen by the
evaluation on a validation fleet, not here.
"""

from __future__ import annotations

import numpy as np
from river import anomaly, preprocessing

__all__ = ["HST_SEED", "hst_scores", "zscore_scores"]

HST_SEED = 42


def zscore_scores(t_ms: np.ndarray, x: np.ndarray, warmup_s: float) -> np.ndarray:
    """Score readings by their largest ``|z|`` against the warm-up's mean and std per metric.

    Args:
        t_ms: Reading times in epoch milliseconds, shape ``(n,)``.
        x: Readings, shape ``(n, k)``; NaN where a metric is missing.
        warmup_s: Seconds from the first reading that define the frozen baseline.

    Returns:
        Scores, shape ``(n,)``; 0 where no metric is present or has a baseline.
    """
    x = np.asarray(x, dtype=float)
    t_ms = np.asarray(t_ms)
    if x.shape[0] == 0:
        return np.zeros(0)
    warm = x[t_ms - t_ms[0] < warmup_s * 1000.0]
    with np.errstate(all="ignore"):
        seen = np.isfinite(warm).sum(axis=0) >= 2
        mean = np.where(seen, np.nanmean(np.where(seen, warm, 0.0), axis=0), 0.0)
        std = np.where(seen, np.nanstd(np.where(seen, warm, 0.0), axis=0), 1.0)
        # A metric that never moved in the warm-up (a stopped machine's flow) would give an
        # infinite z for any later change; floor its spread at a tiny share of its level.
        std = np.maximum(std, 1e-3 * np.abs(mean) + 1e-6)
        z = np.abs((x - mean) / std)
    z[:, ~seen] = np.nan
    z[~np.isfinite(z)] = np.nan
    all_missing = np.isnan(z).all(axis=1)
    out = np.zeros(x.shape[0])
    out[~all_missing] = np.nanmax(z[~all_missing], axis=1)
    return out


def hst_scores(names: list[str], x: np.ndarray, seed: int = HST_SEED) -> np.ndarray:
    """Score readings with one fresh ``MinMaxScaler | HalfSpaceTrees`` model, prequentially.

    Args:
        names: Metric names of the columns of ``x`` (the dict keys River sees).
        x: Readings, shape ``(n, k)``; NaN where a metric is missing (left out of the dict).
        seed: The trees' seed.

    Returns:
        River's anomaly score per reading in [0, 1], each scored before it is learned; 0 where
        no metric is present (nothing to score or learn).
    """
    model = preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(seed=seed)
    out = np.zeros(len(x))
    for i, row in enumerate(np.asarray(x, dtype=float).tolist()):
        reading = {m: v for m, v in zip(names, row, strict=True) if v == v}  # NaN != NaN
        if reading:
            out[i] = model.score_one(reading)
            model.learn_one(reading)
    return out
