"""Online, per-device, multivariate anomaly detector: numpy only, any metric names.

How it works, and why:

* **Baseline per device.** A robust running mean per metric and a running covariance of the
  residuals, both decayed by *elapsed time* (not by count), so irregular intervals and gaps
  weigh history correctly. Two time scales: the location follows slow regime changes (hours),
  the covariance (the shape of normal) is kept for days, so a degradation that builds up over
  hours still stands out against it.
* **Robust to what it sees.** Once warmed up, residuals are clipped at ``huber`` standard
  deviations before they are learned, so an anomaly does not become the new normal quickly,
  while a lasting regime change (a machine first seen stopped, then running) is still learned
  within hours instead of being flagged forever.
* **Multivariate.** The score is the Mahalanobis distance of the standardised residuals under a
  shrunk correlation matrix: a combination that is unusual (current up while flow is down)
  scores high even when each metric alone looks normal. The correlations also absorb the
  machine's operating point (running/stopped, load), which a per-metric threshold cannot.
* **Calibrated.** The squared distance over ``p`` usable metrics is mapped to a standard normal
  deviate (Wilson-Hilferty transform of chi-square with ``p`` degrees of freedom), then to
  [0, 1] by a fixed logistic, so a threshold of 0.9 means the same tail on every device and
  for any number of metrics.
* **Micro-batch friendly and request-boundary free.** Time is cut into fixed buckets
  (``bucket_s``); all readings of a bucket are scored against the baseline as it was at the
  bucket's start (one vectorised pass), and the bucket is learned when a later one begins. The
  pending sums live in the state, so scoring a stream in one request or in many gives the same
  numbers. A late (out-of-order) or repeated reading joins the current bucket: scored, never
  rejected.
* **Batched.** :func:`score_devices` scores a whole request at once: devices sharing a metric
  list have their states stacked along a device axis, only the baseline goes bucket by bucket
  (round ``r`` folds and learns every device's ``r``-th bucket), and then every reading is
  scored in one pass and the trend run through the buckets. Per-device numpy calls, not
  arithmetic, were the cost; the results equal scoring each device alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from operator import attrgetter
from typing import NamedTuple

import numpy as np

from model.state import (
    _ARRAYS,
    _INTS,
    _SCALARS,
    MAX_FULL_COV,
    TREND_SCALES,
    DeviceState,
    _stack_arrays,
    _tag_rows,
)

__all__ = [
    "DetectorConfig",
    "DeviceScores",
    "score_device",
    "score_devices",
    "trend_feature_names",
]

# What the baseline's fold reads.
_BASELINE = (
    *("mean", "w_mean", "slow", "w_slow", "cov", "w_cov", "p_w", "p_x", "p_s", "p_n"),
    *("step", "w_step", "p_d", "p_dn"),
    *("bucket", "folded"),
)
# Matrix elements (per-run k x k matrices) scored at once; bounds memory for wide devices.
_CHUNK_ELEMENTS = 4_000_000
# The baseline a run's readings are scored against, recorded per run.
_SNAP = ("mean", "slow", "cov", "w_cov", "w_mean", "step", "w_step")


@dataclass(frozen=True)
class DetectorConfig:
    """Tuning of the detector; frozen so one config always scores the same way.

    Attributes:
        threshold: ``anomaly_score`` at or above which ``is_anomaly`` is true.
        z_threshold: Standard normal deviate of the distance that maps to ``threshold``.
        z_mid: Deviate that maps to a score of 0.5.
        bucket_s: Length of a learning bucket in seconds.
        tau_location_s: Time constant of the running mean.
        tau_scale_s: Time constant of the running covariance.
        warmup_readings: Effective readings a metric needs before it is scored.
        warmup_s: Seconds of history a baseline needs before anything is scored.
        stale_after_s: A state whose last reading is this far from the batch starts afresh.
        huber: Residuals are clipped at this many standard deviations before learning.
        shrinkage: Weight of the identity in the shrunk correlation matrix.
        eigen_floor: Smallest eigenvalue kept when inverting it; bounds how tight a learned
            relation between metrics can be (sensor noise never allows an exact one).
        move_threshold: A reading *moves* when the median, over the metrics present in it and
            in the previous reading (at least three), of the change since that reading is at
            least this many times the metric's typical change: the whole operating point
            shifts (a start, a stop, a load step), not one metric. A steady machine's noise
            is its typical change, so it never moves; a device with fewer than three
            metrics never does either.
        step_clip: A change enters the typical change clipped at this many times it, so the
            rare large steps of starts and stops do not become typical.
        transient_s: Readings this soon after a move are in a transient, where the relations
            between metrics lag and bend (pressure follows speed squared; temperatures catch
            up over minutes).
        transient_floor: Smallest eigenvalue of the correlation kept for readings in a
            transient: how loosely the relations hold then.
        impute_missing: Learn a missing metric as its expectation given the others (see
            ``_impute``); off learns each covariance entry from the readings that had both
            metrics, which can leave a matrix no reading obeys.
        trend_taus_s: Time constants of the trend features, short then long.
        trend_clip: Conditional residuals are clipped at this many deviations before they
            enter a trend, so one absurd reading cannot dominate hours of evidence.
    """

    threshold: float = 0.9
    z_threshold: float = 4.5
    z_mid: float = 2.5
    bucket_s: float = 300.0
    tau_location_s: float = 6 * 3600.0
    tau_scale_s: float = 3 * 86400.0
    warmup_readings: float = 50.0
    warmup_s: float = 12 * 3600.0
    stale_after_s: float = 7 * 86400.0
    huber: float = 4.0
    shrinkage: float = 0.001
    eigen_floor: float = 1e-4
    move_threshold: float = 4.0
    step_clip: float = 3.0
    transient_s: float = 240.0
    transient_floor: float = 0.1
    impute_missing: bool = True
    trend_taus_s: tuple[float, float] = (3600.0, 6 * 3600.0)
    trend_clip: float = 8.0


class DeviceScores(NamedTuple):
    """Per-reading output of :func:`score_device`, arrays in the order of the readings.

    ``features`` are the trend features (see :func:`trend_feature_names`) as of the start of
    each reading's bucket, so they too do not depend on where requests split the stream;
    ``ready`` is false while the trend has too little history to mean anything.
    """

    score: np.ndarray
    is_anomaly: np.ndarray
    top: np.ndarray  # index into the state's names, -1 when nothing was scored
    features: np.ndarray
    ready: np.ndarray


def trend_feature_names(names: list[str]) -> list[str]:
    """Name the columns of ``DeviceScores.features`` for a state with metrics ``names``.

    Per time scale ``s`` (0 short, 1 long): ``<metric>:mean<s>`` (mean signed conditional
    residual: the metric drifting away from what the others predict), ``<metric>:rms<s>`` (its
    root mean square: growing erratic), and ``*:dev<s>`` (mean calibrated deviate overall).
    """
    out: list[str] = []
    for s in range(TREND_SCALES):
        out += [f"{m}:mean{s}" for m in names]
        out += [f"{m}:rms{s}" for m in names]
        out.append(f"*:dev{s}")
    return out


class _Rows(NamedTuple):
    """A group's readings, ordered by round (then device), with what is known before scoring."""

    dev: np.ndarray  # (N,) device (index into the group) of each row
    t: np.ndarray  # (N,) reading time, ms
    x: np.ndarray  # (N, k) value, 0 where missing
    present: np.ndarray  # (N, k) the metric was reported (finite)
    ready: np.ndarray  # (N,) the baseline is old enough to score this reading
    run: np.ndarray  # (N,) index of the row's run (one device's bucket) in ``run_*``
    run_start: np.ndarray  # (R,) first row of each run
    run_dev: np.ndarray  # (R,) device of each run
    run_bucket: np.ndarray  # (R,) effective bucket of each run
    round_rows: list[int]  # row boundaries of the rounds
    round_runs: list[int]  # run boundaries of the rounds
    transient: np.ndarray | None = None  # (N,) the reading is in a transient
    delta: np.ndarray | None = None  # (N, k) |change| since the device's previous reading, or NaN


def _stack(states: list[DeviceState]) -> dict[str, np.ndarray]:
    """Stack the states of one group along a leading device axis (a copy: inputs stay intact)."""
    g = dict(zip(_ARRAYS, _stack_arrays(states), strict=True))
    # One C-level attribute fetch per state, then one conversion per field: per-device Python
    # steps are what a wide request pays for.
    columns = list(zip(*map(_NUMBERS, states), strict=True))
    for j, key in enumerate(_INTS):
        g[key] = np.array(columns[j], dtype=np.int64)
    n = len(_INTS)
    for j, key in enumerate(_SCALARS):
        g[key] = np.array(columns[n + j], dtype=float)
    return g


_NUMBERS = attrgetter(*_INTS, *_SCALARS)


def _fold(
    g: dict[str, np.ndarray], f: np.ndarray, new_bucket: np.ndarray, k: int, cfg: DetectorConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Learn the pending buckets of devices ``f`` into their baselines, then move them on.

    Decayed by the time since each device's last fold; a device with nothing pending only
    moves to its new bucket. The trend's part of the fold is left to :func:`_trends` (it needs
    the scores, which are computed for all buckets at once): returned are which of ``f``
    learned, and after how long (seconds).
    """
    learned = g["p_w"][f].any(axis=1)
    d = f[learned]
    dt = np.zeros(0)
    if d.size:
        every = d.size == g["p_w"].shape[0]
        sel: slice | np.ndarray = slice(None) if every else d
        v = {key: g[key][sel] for key in _BASELINE}
        dt = np.maximum(0, v["bucket"] - v["folded"]) * cfg.bucket_s
        dl = np.exp(-dt / cfg.tau_location_s)[:, None]
        dc = np.exp(-dt / cfg.tau_scale_s)[:, None]
        wm = dl * v["w_mean"] + v["p_w"]
        mean = np.where(
            wm > 0, (dl * v["w_mean"] * v["mean"] + v["p_x"]) / np.maximum(wm, 1e-300), 0
        )
        # Residuals are around the mean the bucket was scored against: a moving mean widens
        # the covariance slightly, the cautious side for false alarms.
        dcm = dc[:, :, None]
        wc = dcm * v["w_cov"] + v["p_n"]
        cov = (dcm * v["w_cov"] * v["cov"] + v["p_s"]) / np.maximum(wc, 1e-300)
        cov = np.where(wc > 0, cov, 0.0)
        if k > MAX_FULL_COV:
            cov = np.where(np.eye(k, dtype=bool), cov, 0.0)
        ws = dc * v["w_slow"] + v["p_w"]
        slow = np.where(
            ws > 0, (dc * v["w_slow"] * v["slow"] + v["p_x"]) / np.maximum(ws, 1e-300), 0.0
        )
        wd = dl * v["w_step"] + v["p_dn"]
        step = np.where(
            wd > 0, (dl * v["w_step"] * v["step"] + v["p_d"]) / np.maximum(wd, 1e-300), 0.0
        )
        new = {
            "mean": mean, "w_mean": wm, "slow": slow, "w_slow": ws, "cov": cov, "w_cov": wc,
            "step": step, "w_step": wd, "folded": v["bucket"],
        }  # fmt: skip
        for key, value in new.items():
            g[key][sel] = value
        for key in ("p_w", "p_x", "p_s", "p_n", "p_d", "p_dn"):
            g[key][sel] = 0.0
    g["bucket"][f] = new_bucket
    return learned, dt


def _patterns(use: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Group the rows of ``use`` by which metrics they score: ``(metric indices, rows)`` pairs.

    Each missing-metric pattern needs its own marginal precision; most rows share one.
    """
    n, k = use.shape
    if use.all():
        return [(np.arange(k), np.arange(n))]
    if k <= 64:
        packed = np.packbits(use, axis=1)
        codes = np.zeros((n, 8), dtype=np.uint8)
        codes[:, : packed.shape[1]] = packed
        _, first, inverse = np.unique(
            codes.view(np.uint64)[:, 0], return_index=True, return_inverse=True
        )
    else:
        _, first, inverse = np.unique(use, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(np.bincount(inverse)).tolist()
    out = []
    for pi, (s, e) in enumerate(pairwise([0, *bounds])):
        idx = np.flatnonzero(use[first[pi]])
        if idx.size:
            out.append((idx, order[s:e]))
    return out


def _times(zs: np.ndarray, dev: np.ndarray, prec: np.ndarray) -> np.ndarray:
    """Rows ``zs`` (2, n, m) times their run's matrix ``prec[dev]``; rows sorted by run.

    One matrix product per run (a stacked matmul, rows padded to the longest run), as the
    per-device reference did: the same BLAS kernel, so the same rounding. A loop over the runs
    when they are too uneven for padding to pay.
    """
    n = dev.shape[0]
    u = prec.shape[0]
    counts = np.bincount(dev, minlength=u)
    longest = int(counts.max())
    if u * longest == n:
        padded = zs.reshape(2, u, longest, -1)
        return np.matmul(padded, prec).reshape(zs.shape)
    ends = np.cumsum(counts)
    if u * longest > 2 * n + 64:
        out = np.empty_like(zs)
        for j, (s, e) in enumerate(pairwise([0, *ends.tolist()])):
            out[:, s:e] = zs[:, s:e] @ prec[j]
        return out
    pos = np.arange(n) - (ends - counts)[dev]
    padded = np.zeros((2, u, longest, zs.shape[2]))
    padded[:, dev, pos] = zs
    return np.matmul(padded, prec)[:, dev, pos]


def _block_sums(
    per_row: np.ndarray, starts: np.ndarray, run: np.ndarray, gram: int = 0
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Column sums of ``per_row`` per run (rows sorted by run, runs starting at ``starts``).

    With ``gram``: also the Gram matrices (``c.T @ c``) per run of the last ``gram`` columns
    and of the first ``gram``. One zero-padded block per run: the same sums and products, in
    the same order, as one run at a time (so the same rounding as the per-device reference).
    """
    n = per_row.shape[0]
    a = starts.shape[0]
    counts = np.diff(np.append(starts, n))
    longest = int(counts.max())
    cross = pairs = None
    if a * longest > 2 * n + 64:
        # Runs too uneven to pad (one device with most of the readings): sum by segments.
        sums = np.add.reduceat(per_row, starts, axis=0)
        if gram:
            r, pf = per_row[:, -gram:], per_row[:, :gram]
            cross, pairs = np.zeros((a, gram, gram)), np.zeros((a, gram, gram))
            for j, (s, e) in enumerate(pairwise([*starts.tolist(), n])):
                cross[j], pairs[j] = r[s:e].T @ r[s:e], pf[s:e].T @ pf[s:e]
        return sums, cross, pairs
    if a * longest == n:
        padded = per_row.reshape(a, longest, -1)
    else:
        padded = np.zeros((a, longest, per_row.shape[1]))
        padded[run, np.arange(n) - starts[run]] = per_row
    sums = padded.sum(axis=1)
    if gram:
        rp, fp = padded[:, :, -gram:], padded[:, :, :gram]
        cross = np.matmul(rp.transpose(0, 2, 1), rp)
        pairs = np.matmul(fp.transpose(0, 2, 1), fp)
    return sums, cross, pairs


def _learn(
    g: dict[str, np.ndarray],
    sel: slice | np.ndarray,
    rows: _Rows,
    lo: int,
    hi: int,
    ri: np.ndarray,
    starts: np.ndarray,
    cfg: DetectorConfig,
    k: int,
) -> None:
    """Add each device's run (rows ``lo:hi``) to its pending sums, clipped once trusted.

    During the warm-up nothing is clipped: a baseline that first saw the machine stopped must
    still learn what running looks like, not treat it as an anomaly forever.
    """
    mean, w_cov = g["mean"][sel], g["w_cov"][sel]
    var = np.diagonal(g["cov"][sel], axis1=1, axis2=2)
    sd = np.sqrt(np.maximum(var, 0.0) + (1e-4 * np.abs(mean) + 1e-6) ** 2)
    warm = np.diagonal(w_cov, axis1=1, axis2=2) >= cfg.warmup_readings
    present = rows.present[lo:hi]
    one = mean.shape[0] == 1
    mean_r = mean if one else mean[ri]
    r = rows.x[lo:hi] - mean_r
    lim = cfg.huber * sd if one else (cfg.huber * sd)[ri]
    clip = (warm if one else warm[ri]) & rows.ready[lo:hi, None]
    r = np.where(clip, np.clip(r, -lim, lim), r)
    r = np.where(present, r, 0.0)
    pf = present.astype(float)
    pn = pf
    if cfg.impute_missing and not present.all() and k <= MAX_FULL_COV:
        dev = np.zeros_like(ri) if one else ri
        pn, extra = _impute(g["cov"][sel], w_cov, r, present, clip, dev, cfg)
        if extra is not None:
            g["p_s"][sel] += extra
    # The typical change from one reading to the next, clipped once it is known.
    delta = rows.delta[lo:hi] if rows.delta is not None else np.full_like(r, np.nan)
    has = np.isfinite(delta)
    step, w_step = g["step"][sel], g["w_step"][sel]
    cap = np.where(w_step >= cfg.warmup_readings, cfg.step_clip * step, np.inf)
    change = np.where(has, np.minimum(np.where(has, delta, 0.0), cap if one else cap[ri]), 0.0)
    per_row = np.concatenate([pn, pf, pf * (mean_r + r), has.astype(float), change, r], axis=1)
    sums, cross, pairs = _block_sums(per_row, starts, ri, gram=k)
    g["p_w"][sel] += sums[:, k : 2 * k]
    g["p_x"][sel] += sums[:, 2 * k : 3 * k]
    g["p_dn"][sel] += sums[:, 3 * k : 4 * k]
    g["p_d"][sel] += sums[:, 4 * k : 5 * k]
    g["p_s"][sel] += cross
    g["p_n"][sel] += pairs


def _impute(
    cov: np.ndarray,
    w_cov: np.ndarray,
    r: np.ndarray,
    present: np.ndarray,
    trusted: np.ndarray,
    dev: np.ndarray,
    cfg: DetectorConfig,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Fill missing residuals with their expectation given the present ones (in place).

    Learning each covariance entry from whichever readings had both metrics can leave a
    matrix that no reading obeys when a metric drops out for a while (an hour of a pump's
    running without its pressure): with tightly related metrics that is a negative
    eigenvalue, a "relation" that flags the machine for days. So, as in EM for a Gaussian
    with missing data, a missing residual is learned as its conditional mean given the
    present ones, plus the conditional covariance (returned per device, to add to the
    pending cross products). The conditioning uses the correlation as scoring does (pairs
    not yet warm left out, eigenvalues floored at ``eigen_floor``), so it is positive
    definite: every solve is well posed and every conditional variance is positive. Only
    where the baseline is trusted (``trusted``: warm and past the warm-up).

    Returns:
        Per row and metric, 1.0 where the pair sums should count it (present or imputed), and
        the conditional covariances to add per device (``None`` when nothing was imputed).
    """
    miss = ~present & trusted
    obs = present & trusted
    need = miss.any(axis=1) & obs.any(axis=1)
    pn = present.astype(float)
    if not need.any():
        return pn, None
    rows = np.flatnonzero(need)
    u, dev_u = np.unique(dev[rows], return_inverse=True)
    c = cov[u]
    sd = np.sqrt(np.maximum(np.diagonal(c, axis1=1, axis2=2), 0.0))
    sd = np.where(sd > 0, sd, 1.0)
    corr = np.where(w_cov[u] >= cfg.warmup_readings, c / (sd[:, :, None] * sd[:, None, :]), 0.0)
    k = present.shape[1]
    corr[:, np.arange(k), np.arange(k)] = 1.0
    lam, vec = np.linalg.eigh(corr)
    corr = (vec * np.maximum(lam, cfg.eigen_floor)[:, None, :]) @ vec.transpose(0, 2, 1)
    extra = np.zeros_like(cov)
    for om, at_rows in _patterns(np.concatenate([obs[rows], miss[rows]], axis=1)):
        o, m = om[om < k], om[om >= k] - k
        if not (o.size and m.size):
            continue
        at = rows[at_rows]
        uu, inv = np.unique(dev_u[at_rows], return_inverse=True)
        sub = corr[uu]
        try:
            b = np.linalg.solve(sub[:, o][:, :, o], sub[:, o][:, :, m])  # (devices, o, m)
        except np.linalg.LinAlgError:
            continue  # cannot happen with floored eigenvalues; never fail a request on it
        cond = sub[:, m][:, :, m] - sub[:, m][:, :, o] @ b
        s_o, s_m = sd[uu][:, o], sd[uu][:, m]
        z_o = r[np.ix_(at, o)] / s_o[inv]
        r[np.ix_(at, m)] = np.einsum("ij,ijk->ik", z_o, b[inv]) * s_m[inv]
        counts = np.bincount(inv, minlength=uu.size).astype(float)
        scaled = cond * (s_m[:, :, None] * s_m[:, None, :]) * counts[:, None, None]
        extra[u[uu][:, None, None], m[None, :, None], m[None, None, :]] += scaled
        pn[np.ix_(at, m)] = 1.0
    return pn, extra


class _Scored(NamedTuple):
    score: np.ndarray  # (n,)
    top: np.ndarray  # (n,) -1 where nothing was scored
    pending: np.ndarray  # (runs, 3k + 2) trend sums per run: used, residual, square, count, dev


def _score_runs(base: dict[str, np.ndarray], rows: _Rows, cfg: DetectorConfig, k: int) -> _Scored:
    """Score every reading against its run's baseline (``base``: one row per run).

    All runs of all devices at once: the baselines are known before anything is scored,
    since scores only feed the trend, never the baseline.
    """
    run = rows.run
    n = run.shape[0]
    mean, cov, w_cov = base["mean"], base["cov"], base["w_cov"]
    var = np.diagonal(cov, axis1=1, axis2=2)
    sd = np.sqrt(np.maximum(var, 0.0) + (1e-4 * np.abs(mean) + 1e-6) ** 2)
    score = np.zeros(n)
    top = np.full(n, -1, dtype=np.int64)
    cond = np.zeros((n, k))
    dev = np.full(n, np.nan)
    warm = np.minimum(np.diagonal(w_cov, axis1=1, axis2=2), base["w_mean"]) >= cfg.warmup_readings
    use = rows.present & warm[run] & rows.ready[:, None]
    if use.any():
        x = rows.x
        sd_r = sd[run]
        z = np.where(use, (x - mean[run]) / sd_r, 0.0)
        z_slow = np.where(use, (x - base["slow"][run]) / sd_r, 0.0)
        corr = cov / (sd[:, :, None] * sd[:, None, :])
        pair_ok = w_cov >= cfg.warmup_readings if k <= MAX_FULL_COV else np.eye(k, dtype=bool)
        corr = np.where(pair_ok, corr, 0.0)
        diag = np.arange(k)
        corr[:, diag, diag] = 1.0
        corr = (1.0 - cfg.shrinkage) * corr + cfg.shrinkage * np.eye(k)
        slope = np.log(9.0) / (cfg.z_threshold - cfg.z_mid)
        for idx, pr in _patterns(use):
            dp = run[pr]
            first = np.empty(dp.size, dtype=bool)
            first[0] = True
            np.not_equal(dp[1:], dp[:-1], out=first[1:])
            u = dp[first]
            uinv = np.cumsum(first) - 1
            m = idx.size
            full = m == k
            if full:
                sub = corr if u.size == corr.shape[0] else corr[u]
            else:
                sub = corr[np.ix_(u, idx, idx)]
            finite = np.isfinite(sub).all(axis=(1, 2))
            if not finite.all():
                # An overflowed baseline: not scored; the state is reset after this batch.
                keep = finite[uinv]
                pr, uinv = pr[keep], (np.cumsum(finite) - 1)[uinv[keep]]
                sub = sub[finite]
                if not pr.size:
                    continue
            lam_raw, vec = np.linalg.eigh(sub)
            lam = np.maximum(lam_raw, cfg.eigen_floor)
            prec = (vec / lam[:, None, :]) @ vec.transpose(0, 2, 1)
            zs = z[pr] if full else z[np.ix_(pr, idx)]
            zs_slow = z_slow[pr] if full else z_slow[np.ix_(pr, idx)]
            gg, cs = _times(np.stack([zs, zs_slow]), uinv, prec)
            dist2 = np.einsum("ij,ij->i", gg, zs)
            p = float(m)
            c = 2.0 / (9.0 * p)
            wh = (np.cbrt(np.maximum(dist2, 0.0) / p) - (1.0 - c)) / np.sqrt(c)
            score[pr] = 1.0 / (1.0 + np.exp(-np.clip(slope * (wh - cfg.z_mid), -50.0, 50.0)))
            dev[pr] = wh
            # g_j / sqrt(prec_jj): metric j's residual once the others have explained what
            # they can (the standardised residual of regressing it on them). The trend takes
            # it against the slow location, signed.
            inv_sd = (1.0 / np.sqrt(np.diagonal(prec, axis1=1, axis2=2)))[uinv]
            top[pr] = idx[np.argmax(np.abs(gg) * inv_sd, axis=1)]
            if full:
                cond[pr] = cs * inv_sd
            else:
                cond[np.ix_(pr, idx)] = cs * inv_sd
            if rows.transient is not None:
                trp = rows.transient[pr]
                if trp.any():
                    at = pr[trp]
                    score[at], top[at] = _score_transient(
                        zs[trp], uinv[trp], lam_raw, vec, idx, p, slope, cfg
                    )
    if rows.transient is not None and rows.transient.any():
        # Transient readings stay out of the trend: how a start-up bends the relations
        # between metrics says nothing about wear.
        cond[rows.transient] = 0.0
        dev[rows.transient] = np.nan
        use = use & ~rows.transient[:, None]
    c = np.clip(cond, -cfg.trend_clip, cfg.trend_clip)
    ok = np.isfinite(dev)
    clipped = np.where(ok, np.clip(dev, -cfg.trend_clip, cfg.trend_clip), 0.0)
    per_row = np.concatenate([use, c, c * c, ok[:, None], clipped[:, None]], axis=1)
    pending, _, _ = _block_sums(per_row, rows.run_start, run)
    return _Scored(score, top, pending)


def _score_transient(
    zs: np.ndarray,
    uinv: np.ndarray,
    lam: np.ndarray,
    vec: np.ndarray,
    idx: np.ndarray,
    p: float,
    slope: float,
    cfg: DetectorConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Score and top metric of rows in a transient: the same distance, looser relations.

    While the operating point moves, tight relations between metrics hold only roughly
    (pressure follows speed squared, temperatures lag by minutes), so the eigenvalues of the
    correlation are floored at ``transient_floor`` instead of ``eigen_floor``: being at
    another operating point (the main directions) still costs nothing extra, and a reading
    far off every direction still scores.
    """
    # Only the runs that have transient rows; one product per run, as on the main path.
    runs, uinv = np.unique(uinv, return_inverse=True)
    lam_t = np.maximum(lam[runs], cfg.transient_floor)
    vec = vec[runs]
    prec = (vec / lam_t[:, None, :]) @ vec.transpose(0, 2, 1)
    gt = _times(np.stack([zs, zs]), uinv, prec)[0]
    dist2 = np.einsum("ij,ij->i", gt, zs)
    c = 2.0 / (9.0 * p)
    wh = (np.cbrt(np.maximum(dist2, 0.0) / p) - (1.0 - c)) / np.sqrt(c)
    score = 1.0 / (1.0 + np.exp(-np.clip(slope * (wh - cfg.z_mid), -50.0, 50.0)))
    inv_sd = (1.0 / np.sqrt(np.diagonal(prec, axis1=1, axis2=2)))[uinv]
    return score, idx[np.argmax(np.abs(gt) * inv_sd, axis=1)]


def _changes(g: dict[str, np.ndarray], x: np.ndarray, dev: np.ndarray) -> np.ndarray:
    """Absolute change of each metric since the device's previous reading; updates ``g``.

    Rows are device-contiguous in arrival order; the first reading of a device compares with
    the last one of its previous request (the state's ``last``). NaN where the metric is
    missing in either reading.
    """
    n = x.shape[0]
    present = np.isfinite(x)
    first = np.ones(n, dtype=bool)
    first[1:] = dev[1:] != dev[:-1]
    prev = np.empty_like(x)
    prev[1:] = x[:-1]
    prev[first] = np.where(g["last_ok"][dev[first]] > 0, g["last"][dev[first]], np.nan)
    delta = np.abs(x - prev)
    last = np.flatnonzero(np.append(first[1:], True))
    d_last = dev[last]
    g["last"][d_last] = np.where(present[last], x[last], 0.0)
    g["last_ok"][d_last] = present[last].astype(float)
    return delta


def _moving(base: dict[str, np.ndarray], rows: _Rows, cfg: DetectorConfig) -> np.ndarray:
    """Which rows move: most metrics changed by many times their typical change at once.

    Measured against the typical change of the baseline the row's run is scored against,
    so the answer does not depend on where requests split the stream. A move needs at least
    three metrics that changed together: one metric jumping alone is what an anomaly looks
    like, not a new operating point.
    """
    assert rows.delta is not None
    run = rows.run
    k = rows.delta.shape[1]
    step = base["step"][run]
    known = np.isfinite(rows.delta) & (base["w_step"][run] >= cfg.warmup_readings)
    ratio = np.where(known, np.where(known, rows.delta, 0.0) / np.maximum(step, 1e-12), np.inf)
    ratio.sort(axis=1)  # unknown last
    cnt = known.sum(axis=1)
    lo = np.maximum(cnt - 1, 0) // 2
    hi = np.minimum(cnt // 2, k - 1)
    med = 0.5 * (
        np.take_along_axis(ratio, lo[:, None], axis=1)[:, 0]
        + np.take_along_axis(ratio, hi[:, None], axis=1)[:, 0]
    )
    return (cnt >= 3) & (med >= cfg.move_threshold)


def _transients(
    g: dict[str, np.ndarray],
    t: np.ndarray,
    dev: np.ndarray,
    moving: np.ndarray,
    lens: list[int],
    cfg: DetectorConfig,
) -> np.ndarray:
    """Which readings (device-contiguous, arrival order) follow a move closely; updates ``g``.

    A reading is in a transient when a move happened at most ``transient_s`` before it (in
    this request or, through the state's ``t_move``, an earlier one). A late reading, older
    than the latest move, is not: it came from before the machine moved.
    """
    moved = _segment_cummax(np.where(moving, t, 0), dev, lens)
    since = np.maximum(moved, g["t_move"][dev].astype(np.int64))
    age = t - since
    transient = (since > 0) & (age >= 0) & (age <= cfg.transient_s * 1000.0)
    last = np.cumsum(lens) - 1
    g["t_move"][dev[last]] = since[last]
    return transient


def _score_runs_chunked(
    base: dict[str, np.ndarray], rows: _Rows, cfg: DetectorConfig, k: int
) -> _Scored:
    """:func:`_score_runs` in slices of runs, so the per-run matrices stay within ~32 MB.

    A wide device (many metrics) in a large batch would otherwise need a ``(runs, k, k)``
    matrix per step at once.
    """
    n_runs = rows.run_start.shape[0]
    step = max(1, _CHUNK_ELEMENTS // max(1, k * k))
    if n_runs <= step:
        return _score_runs(base, rows, cfg, k)
    parts: list[_Scored] = []
    starts = [*rows.run_start.tolist(), rows.run.shape[0]]
    for r0 in range(0, n_runs, step):
        r1 = min(r0 + step, n_runs)
        lo, hi = starts[r0], starts[r1]
        part = rows._replace(
            x=rows.x[lo:hi], present=rows.present[lo:hi], ready=rows.ready[lo:hi],
            run=rows.run[lo:hi] - r0, run_start=rows.run_start[r0:r1] - lo,
            transient=None if rows.transient is None else rows.transient[lo:hi],
        )  # fmt: skip
        parts.append(_score_runs({key: v[r0:r1] for key, v in base.items()}, part, cfg, k))
    return _Scored(*(np.concatenate(field) for field in zip(*parts, strict=True)))


def _trends(
    g: dict[str, np.ndarray],
    rows: _Rows,
    learned: np.ndarray,
    dt: np.ndarray,
    pending: np.ndarray,
    cfg: DetectorConfig,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Run the trend through the buckets; return its features and readiness per run.

    The trend's fold, in the same order as the baseline's: a run whose bucket start folded
    (``learned``, after ``dt`` seconds) first decays the trend and adds the pending sums; its
    readings then see the trend as it is, and its own sums become pending.
    """
    d = g["tr_w"].shape[0]
    # Trend and pending sums side by side: [w, s, q] per metric, then the deviate's [w, s].
    trend = np.concatenate(
        [g["tr_w"], g["tr_s"], g["tr_q"], g["tg_w"][:, :, None], g["tg_s"][:, :, None]], axis=2
    )
    pend = np.concatenate(
        [g["pc_n"], g["pc_s"], g["pc_q"], g["pg_n"][:, None], g["pg_s"][:, None]], axis=1
    )
    seen = np.empty((pending.shape[0], *trend.shape[1:]))
    taus = np.asarray(cfg.trend_taus_s)
    runs = rows.round_runs
    for a0, a1 in pairwise(runs):
        if a0 == a1:
            continue
        act = rows.run_dev[a0:a1]
        sel: slice | np.ndarray = slice(None) if a1 - a0 == d else act
        fl = learned[a0:a1]
        if fl.all() and a1 - a0 == d:
            a = np.exp(-dt[a0:a1][:, None] / taus)
            trend = a[:, :, None] * trend + pend[:, None, :]
            pend[:] = 0.0
        elif fl.any():
            f = act[fl]
            a = np.exp(-dt[a0:a1][fl][:, None] / taus)
            trend[f] = a[:, :, None] * trend[f] + pend[f][:, None, :]
            pend[f] = 0.0
        seen[a0:a1] = trend[sel]
        pend[sel] += pending[a0:a1]
    g["tr_w"], g["tr_s"], g["tr_q"] = (
        trend[:, :, :k],
        trend[:, :, k : 2 * k],
        trend[:, :, 2 * k : 3 * k],
    )
    g["tg_w"], g["tg_s"] = trend[:, :, 3 * k], trend[:, :, 3 * k + 1]
    g["pc_n"], g["pc_s"], g["pc_q"] = pend[:, :k], pend[:, k : 2 * k], pend[:, 2 * k : 3 * k]
    g["pg_n"], g["pg_s"] = pend[:, 3 * k], pend[:, 3 * k + 1]
    tr_w, tg_w = seen[:, :, :k], seen[:, :, 3 * k]
    w = np.maximum(tr_w, 1e-300)
    mean = np.where(tr_w > 0, seen[:, :, k : 2 * k] / w, 0.0)
    rms = np.sqrt(np.where(tr_w > 0, seen[:, :, 2 * k : 3 * k] / w, 0.0))
    dev = np.where(tg_w > 0, seen[:, :, 3 * k + 1] / np.maximum(tg_w, 1e-300), 0.0)
    parts: list[np.ndarray] = []
    for s in range(TREND_SCALES):
        parts += [mean[:, s], rms[:, s], dev[:, s : s + 1]]
    features = np.nan_to_num(np.concatenate(parts, axis=1), nan=0.0, posinf=0.0, neginf=0.0)
    return features, tg_w[:, -1] >= cfg.warmup_readings


def _empty(st: DeviceState) -> DeviceScores:
    f = len(trend_feature_names(st.names))
    return DeviceScores(
        np.zeros(0), np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int64),
        np.zeros((0, f)), np.zeros(0, dtype=bool),
    )  # fmt: skip


def _segment_cummax(b: np.ndarray, dev: np.ndarray, lens: list[int]) -> np.ndarray:
    """Running maximum of ``b`` restarting at each device (rows are device-contiguous)."""
    d = len(lens)
    if d == 1:
        return np.maximum.accumulate(b)
    lo = int(b.min())
    span = int(b.max()) - lo + 1
    if span * d < 2**62:
        # Lift each device above every earlier one, so one running maximum serves them all.
        lift = dev * span
        return np.maximum.accumulate(b - lo + lift) - lift + lo
    bounds = np.cumsum([0, *lens]).tolist()
    return np.concatenate([np.maximum.accumulate(b[s:e]) for s, e in pairwise(bounds)])


def _rows(
    g: dict[str, np.ndarray], t: np.ndarray, x: np.ndarray, lens: list[int], cfg: DetectorConfig
) -> tuple[_Rows, np.ndarray | None]:
    """Cut a group's readings into runs and order them by round; also the order used.

    A late reading joins the current bucket (running maximum of the buckets), so a run is a
    maximal stretch of one device's readings with the same effective bucket; round ``r`` holds
    every device's ``r``-th run.
    """
    d = len(lens)
    dev = np.repeat(np.arange(d), lens)
    bucket_ms = int(cfg.bucket_s * 1000)
    eff = np.maximum(_segment_cummax(t // bucket_ms, dev, lens), g["bucket"][dev])
    n = t.shape[0]
    start = np.ones(n, dtype=bool)
    start[1:] = (eff[1:] != eff[:-1]) | (dev[1:] != dev[:-1])
    run = np.cumsum(start) - 1
    order: np.ndarray | None = None
    if d > 1:
        first_rows = np.cumsum([0, *lens[:-1]])
        rnd = run - run[first_rows][dev]
        if rnd.any():
            order = np.argsort(rnd, kind="stable")
            dev, t, x, eff, rnd = dev[order], t[order], x[order], eff[order], rnd[order]
            start[1:] = (rnd[1:] != rnd[:-1]) | (dev[1:] != dev[:-1])
            run = np.cumsum(start) - 1
    else:
        rnd = run
    run_start = np.flatnonzero(start)
    run_round = rnd[run_start]
    rounds = np.arange(int(run_round[-1]) + 2)
    present = np.isfinite(x)
    ready = (t - g["t_first"][dev]) >= cfg.warmup_s * 1000.0
    rows = _Rows(
        dev, t, np.where(present, x, 0.0), present, ready, run, run_start, dev[run_start],
        eff[run_start], np.searchsorted(rnd, rounds).tolist(),
        np.searchsorted(run_round, rounds).tolist(),
    )  # fmt: skip
    return rows, order


def _transient_rows(
    g: dict[str, np.ndarray],
    base: dict[str, np.ndarray],
    rows: _Rows,
    order: np.ndarray | None,
    t: np.ndarray,
    lens: list[int],
    cfg: DetectorConfig,
) -> np.ndarray:
    """:func:`_transients` for a group's rows: moves in round order, time in arrival order."""
    moving = _moving(base, rows, cfg)
    dev = rows.dev
    if order is not None:
        back = np.empty_like(order)
        back[order] = np.arange(order.shape[0])
        moving, dev = moving[back], dev[back]
    transient = _transients(g, t, dev, moving, lens, cfg)
    return transient if order is None else transient[order]


def _score_group(
    states: list[DeviceState], ts: list[np.ndarray], xs: list[np.ndarray], cfg: DetectorConfig
) -> list[tuple[DeviceState, DeviceScores]]:
    """Score devices sharing one metric list, their states stacked along a device axis.

    Only the baseline has to go bucket by bucket (round by round); it does not depend on the
    scores. So the rounds only fold and learn, recording each run's baseline, and then every
    reading of every run is scored at once and the trend (which does depend on the scores)
    is run through the buckets with a few operations per round.
    """
    names = states[0].names
    k = len(names)
    d = len(states)
    g = _stack(states)
    lens = [t.shape[0] for t in ts]
    t = np.concatenate(ts) if d > 1 else ts[0]
    x = np.concatenate(xs) if d > 1 else xs[0]
    t_max = np.maximum.reduceat(t, np.cumsum([0, *lens[:-1]])) if d > 1 else t.max(keepdims=True)
    delta = _changes(g, x, np.repeat(np.arange(d), lens)) if k else None
    rows, order = _rows(g, t, x, lens, cfg)
    if delta is not None:
        rows = rows._replace(delta=delta if order is None else delta[order])
    n_runs = rows.run_start.shape[0]
    base = {key: np.empty((n_runs, *g[key].shape[1:])) for key in _SNAP}
    learned = np.zeros(n_runs, dtype=bool)
    dt = np.zeros(n_runs)
    bounds, runs = rows.round_rows, rows.round_runs
    # Overflow from absurd values is handled below (the state starts afresh), not warned about.
    with np.errstate(over="ignore", invalid="ignore"):
        for (lo, hi), (a0, a1) in zip(pairwise(bounds), pairwise(runs), strict=True):
            act, new_bucket = rows.run_dev[a0:a1], rows.run_bucket[a0:a1]
            need = np.flatnonzero(new_bucket != g["bucket"][act])
            if need.size:
                fl, fdt = _fold(g, act[need], new_bucket[need], k, cfg)
                learned[a0 + need[fl]] = True
                dt[a0 + need[fl]] = fdt
            sel: slice | np.ndarray = slice(None) if a1 - a0 == d else act
            for key in _SNAP:
                base[key][a0:a1] = g[key][sel]
            if k:
                ri = rows.run[lo:hi] - a0
                _learn(g, sel, rows, lo, hi, ri, rows.run_start[a0:a1] - lo, cfg, k)
        if k:
            rows = rows._replace(transient=_transient_rows(g, base, rows, order, t, lens, cfg))
        scored = _score_runs_chunked(base, rows, cfg, k)
        run_features, run_ready = _trends(g, rows, learned, dt, scored.pending, cfg, k)
    score, top = scored.score, scored.top
    features, ready = run_features[rows.run], run_ready[rows.run]
    if order is not None:
        back = np.empty_like(order)
        back[order] = np.arange(t.shape[0])
        score, top, features, ready = score[back], top[back], features[back], ready[back]
    g["t_last"] = np.maximum(g["t_last"], t_max)
    every = np.concatenate(
        [*(g[key][:, None] for key in _SCALARS), *(g[key].reshape(d, -1) for key in _ARRAYS)],
        axis=1,
    )
    finite = np.isfinite(every).all(axis=1).tolist()
    score = np.nan_to_num(score, nan=0.0)
    flags = score >= cfg.threshold
    fields = zip(
        *(g[key].tolist() for key in _INTS), *(list(g[key]) for key in _ARRAYS),
        *(g[key].tolist() for key in _SCALARS), strict=True,
    )  # fmt: skip
    cuts = np.cumsum(lens).tolist()
    stacks = tuple(g[key] for key in _ARRAYS)  # the states' arrays are their rows
    out: list[tuple[DeviceState, DeviceScores]] = []
    for j, (ok, row, s, e) in enumerate(zip(finite, fields, [0, *cuts[:-1]], cuts, strict=True)):
        # Absurd magnitudes (1e300) overflowed the sums: a state must stay plain finite JSON,
        # so the device starts afresh rather than poisoning every later request.
        st = (
            _tag_rows(DeviceState(list(names), *row), stacks, j)
            if ok
            else DeviceState.fresh(names, row[1], row[2])
        )
        out.append((st, DeviceScores(score[s:e], flags[s:e], top[s:e], features[s:e], ready[s:e])))
    return out


def score_devices(
    states: Sequence[DeviceState | None],
    names: Sequence[str] | Sequence[Sequence[str]],
    t_ms: Sequence[np.ndarray],
    x: Sequence[np.ndarray],
    config: DetectorConfig | None = None,
) -> list[tuple[DeviceState, DeviceScores]]:
    """Score many devices at once; the same results as :func:`score_device` on each.

    Devices whose (extended) states share a metric list are scored together, their states
    stacked along a leading device axis and their buckets taken in rounds (round ``r`` is
    every device's ``r``-th bucket), so the cost per device is a few array rows rather than
    dozens of small numpy calls.

    Args:
        states: Per device, its state from the previous call or ``None``.
        names: Metric names of the columns of every ``x`` (one list), or one list per device.
        t_ms: Per device, reading times in epoch milliseconds, in arrival order.
        x: Per device, readings of shape ``(n, len(names))``; NaN where a metric is missing.
        config: Tuning; the defaults when ``None``.

    Returns:
        Per device, in order, its next state and its per-reading scores.
    """
    cfg = config or DetectorConfig()
    shared = len(names) == 0 or isinstance(names[0], str)
    bucket_ms = int(cfg.bucket_s * 1000)
    stale_ms = cfg.stale_after_s * 1000.0
    out: list[tuple[DeviceState, DeviceScores] | None] = [None] * len(states)
    groups: dict[tuple[str, ...], list[tuple[int, DeviceState, np.ndarray, np.ndarray]]] = {}
    ts = [np.asarray(t, dtype=np.int64) for t in t_ms]
    latest = _latest(ts)
    for i, state in enumerate(states):
        cols = list(names if shared else names[i])  # type: ignore[arg-type]
        t = ts[i]
        if t.shape[0] == 0:
            st = state if state is not None else DeviceState.fresh(cols, 0, 0)
            out[i] = (st, _empty(st))
            continue
        xi = np.asarray(x[i], dtype=float)
        # Stale: a long silence, or a whole batch far behind the state (a device clock reset).
        # One ancient late reading among recent ones is scored, not a reason to forget.
        if state is not None:
            t_max = latest[i]
            if t_max - state.t_last > stale_ms or state.t_last - t_max > stale_ms:
                state = None
        if state is None:
            t0 = int(t[0])
            st = DeviceState.fresh(cols, t0, t0 // bucket_ms)
        else:
            st = state.with_metrics(cols)
        if st.names != cols or len(set(cols)) != len(cols):
            # Columns in the state's order (metrics the batch lacks are missing, NaN).
            col = {name: j for j, name in enumerate(cols)}
            xs = np.full((t.shape[0], len(st.names)), np.nan)
            for j, name in enumerate(st.names):
                if name in col:
                    xs[:, j] = xi[:, col[name]]
            xi = xs
        groups.setdefault(tuple(st.names), []).append((i, st, t, xi))
    for members in groups.values():
        results = _score_group(
            [m[1] for m in members], [m[2] for m in members], [m[3] for m in members], cfg
        )
        for m, result in zip(members, results, strict=True):
            out[m[0]] = result
    return out  # type: ignore[return-value]


def _latest(ts: list[np.ndarray]) -> list[int]:
    """Each array's largest time (0 for an empty one), in one reduction for all of them."""
    lens = [t.shape[0] for t in ts]
    if not any(lens):
        return lens
    starts = np.cumsum([0, *lens[:-1]])
    nonempty = np.flatnonzero(lens)
    out = [0] * len(ts)
    for i, t_max in zip(
        nonempty.tolist(),
        np.maximum.reduceat(np.concatenate(ts), starts[nonempty]).tolist(),
        strict=True,
    ):
        out[i] = t_max
    return out


def score_device(
    state: DeviceState | None,
    names: list[str],
    t_ms: np.ndarray,
    x: np.ndarray,
    config: DetectorConfig | None = None,
) -> tuple[DeviceState, DeviceScores]:
    """Score one device's readings in order and return its next state.

    Args:
        state: The device's state from the previous call, or ``None`` for a fresh baseline.
        names: Metric names of the columns of ``x``.
        t_ms: Reading times in epoch milliseconds, shape ``(n,)``, in arrival order (may repeat
            or go backwards).
        x: Readings, shape ``(n, len(names))``; NaN where a metric is missing.
        config: Tuning; the defaults when ``None``.

    Returns:
        The next state (a new object; ``state`` is not modified) and per-reading scores, with
        ``top`` indexing the *returned* state's ``names``.
    """
    return score_devices([state], [names], [t_ms], [x], config)[0]
