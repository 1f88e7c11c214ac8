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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from model.state import MAX_FULL_COV, TREND_SCALES, DeviceState

__all__ = ["DetectorConfig", "DeviceScores", "score_device", "trend_feature_names"]


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


def _features(st: DeviceState, cfg: DetectorConfig) -> tuple[np.ndarray, bool]:
    """The trend features of ``st`` as one vector, and whether they are ready."""
    w = np.maximum(st.tr_w, 1e-300)
    mean = np.where(st.tr_w > 0, st.tr_s / w, 0.0)
    rms = np.sqrt(np.where(st.tr_w > 0, st.tr_q / w, 0.0))
    dev = np.where(st.tg_w > 0, st.tg_s / np.maximum(st.tg_w, 1e-300), 0.0)
    parts: list[np.ndarray] = []
    for s in range(TREND_SCALES):
        parts += [mean[s], rms[s], dev[s : s + 1]]
    return np.concatenate(parts), bool(st.tg_w[-1] >= cfg.warmup_readings)


class _Run(NamedTuple):
    score: np.ndarray  # (n,)
    top: np.ndarray  # (n,)
    cond: np.ndarray  # (n, k) signed conditional residual, 0 where not scored
    used: np.ndarray  # (n, k) which metrics were scored
    dev: np.ndarray  # (n,) calibrated deviate, NaN where nothing was scored


def _score_run(st: DeviceState, x: np.ndarray, t_ms: np.ndarray, cfg: DetectorConfig) -> _Run:
    """Score the readings ``x`` (n, k; NaN = missing) of one bucket against the baseline."""
    n, k = x.shape
    score = np.zeros(n)
    top = np.full(n, -1, dtype=np.int64)
    cond_out = np.zeros((n, k))
    dev = np.full(n, np.nan)
    present = ~np.isnan(x)
    var = np.diag(st.cov)
    floor = (1e-4 * np.abs(st.mean) + 1e-6) ** 2
    sd = np.sqrt(np.maximum(var, 0.0) + floor)
    warm = np.minimum(np.diag(st.w_cov), st.w_mean) >= cfg.warmup_readings
    ready = (t_ms - st.t_first) >= cfg.warmup_s * 1000.0
    use = present & warm[None, :] & ready[:, None]
    if not use.any():
        return _Run(score, top, cond_out, use, dev)
    z = np.where(use, (np.nan_to_num(x) - st.mean) / sd, 0.0)
    z_slow = np.where(use, (np.nan_to_num(x) - st.slow) / sd, 0.0)
    corr = st.cov / np.outer(sd, sd)
    pair_ok = st.w_cov >= cfg.warmup_readings
    if k > MAX_FULL_COV:
        pair_ok = np.eye(k, dtype=bool)
    corr = np.where(pair_ok, corr, 0.0)
    np.fill_diagonal(corr, 1.0)
    corr = (1.0 - cfg.shrinkage) * corr + cfg.shrinkage * np.eye(k)
    patterns, inverse = np.unique(use, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    for pi, pattern in enumerate(patterns):
        idx = np.flatnonzero(pattern)
        if idx.size == 0:
            continue
        rows = np.flatnonzero(inverse == pi)
        sub = corr[np.ix_(idx, idx)]
        if not np.isfinite(sub).all():
            continue  # an overflowed baseline; the state is reset after this batch
        lam, vec = np.linalg.eigh(sub)
        lam = np.maximum(lam, cfg.eigen_floor)
        prec = (vec / lam) @ vec.T
        zs = z[np.ix_(rows, idx)]
        g = zs @ prec
        dist2 = np.einsum("ij,ij->i", g, zs)
        p = float(idx.size)
        c = 2.0 / (9.0 * p)
        wh = (np.cbrt(np.maximum(dist2, 0.0) / p) - (1.0 - c)) / np.sqrt(c)
        slope = np.log(9.0) / (cfg.z_threshold - cfg.z_mid)
        score[rows] = 1.0 / (1.0 + np.exp(-np.clip(slope * (wh - cfg.z_mid), -50.0, 50.0)))
        dev[rows] = wh
        # g_j / sqrt(prec_jj): metric j's residual once the others have explained what they
        # can (the standardised residual of regressing it on them). The trend takes it
        # against the slow location, signed.
        inv_sd = 1.0 / np.sqrt(np.diag(prec))
        top[rows] = idx[np.argmax(np.abs(g) * inv_sd, axis=1)]
        cond_out[np.ix_(rows, idx)] = (z_slow[np.ix_(rows, idx)] @ prec) * inv_sd
    return _Run(score, top, cond_out, use, dev)


def _learn_run(
    st: DeviceState, x: np.ndarray, t_ms: np.ndarray, run: _Run, cfg: DetectorConfig
) -> None:
    """Add one bucket's readings to the pending sums, clipped once the baseline is trusted.

    During the warm-up nothing is clipped: a baseline that first saw the machine stopped must
    still learn what running looks like, not treat it as an anomaly forever.
    """
    present = ~np.isnan(x)
    var = np.diag(st.cov)
    sd = np.sqrt(np.maximum(var, 0.0) + (1e-4 * np.abs(st.mean) + 1e-6) ** 2)
    warm = np.diag(st.w_cov) >= cfg.warmup_readings
    ready = (t_ms - st.t_first) >= cfg.warmup_s * 1000.0
    r = np.nan_to_num(x) - st.mean
    lim = cfg.huber * sd
    r = np.where(warm[None, :] & ready[:, None], np.clip(r, -lim, lim), r)
    r = np.where(present, r, 0.0)
    pf = present.astype(float)
    st.p_w += pf.sum(axis=0)
    st.p_x += (pf * (st.mean + r)).sum(axis=0)
    st.p_s += r.T @ r
    st.p_n += pf.T @ pf
    c = np.clip(run.cond, -cfg.trend_clip, cfg.trend_clip)
    st.pc_n += run.used.sum(axis=0)
    st.pc_s += c.sum(axis=0)
    st.pc_q += (c * c).sum(axis=0)
    scored = np.isfinite(run.dev)
    st.pg_n += float(scored.sum())
    st.pg_s += float(np.clip(run.dev[scored], -cfg.trend_clip, cfg.trend_clip).sum())


def _fold(st: DeviceState, bucket: int, cfg: DetectorConfig) -> None:
    """Learn the pending bucket into the baseline, decayed by the time since the last fold."""
    if st.p_w.any():
        dt = max(0, st.bucket - st.folded) * cfg.bucket_s
        dl, dc = np.exp(-dt / cfg.tau_location_s), np.exp(-dt / cfg.tau_scale_s)
        wm = dl * st.w_mean + st.p_w
        st.mean = np.where(wm > 0, (dl * st.w_mean * st.mean + st.p_x) / np.maximum(wm, 1e-300), 0)
        # Residuals are around the mean the bucket was scored against: a moving mean widens
        # the covariance slightly, the cautious side for false alarms.
        wc = dc * st.w_cov + st.p_n
        cov = (dc * st.w_cov * st.cov + st.p_s) / np.maximum(wc, 1e-300)
        st.cov = np.where(wc > 0, cov, 0.0)
        if len(st.names) > MAX_FULL_COV:
            st.cov = np.diag(np.diag(st.cov))
        ws = dc * st.w_slow + st.p_w
        st.slow = np.where(
            ws > 0, (dc * st.w_slow * st.slow + st.p_x) / np.maximum(ws, 1e-300), 0.0
        )
        st.w_mean, st.w_slow, st.w_cov = wm, ws, wc
        a = np.exp(-dt / np.asarray(cfg.trend_taus_s))
        st.tr_w = a[:, None] * st.tr_w + st.pc_n
        st.tr_s = a[:, None] * st.tr_s + st.pc_s
        st.tr_q = a[:, None] * st.tr_q + st.pc_q
        st.tg_w = a * st.tg_w + st.pg_n
        st.tg_s = a * st.tg_s + st.pg_s
        st.folded = st.bucket
        st.p_w, st.p_x = np.zeros_like(st.p_w), np.zeros_like(st.p_x)
        st.p_s, st.p_n = np.zeros_like(st.p_s), np.zeros_like(st.p_n)
        st.pc_n, st.pc_s, st.pc_q = (np.zeros_like(st.pc_n) for _ in range(3))
        st.pg_n = st.pg_s = 0.0
    st.bucket = bucket


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
    cfg = config or DetectorConfig()
    t_ms = np.asarray(t_ms, dtype=np.int64)
    n = t_ms.shape[0]
    bucket_ms = int(cfg.bucket_s * 1000)
    if n == 0:
        st = state if state is not None else DeviceState.fresh(names, 0, 0)
        f = len(trend_feature_names(st.names))
        empty = DeviceScores(
            np.zeros(0), np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int64),
            np.zeros((0, f)), np.zeros(0, dtype=bool),
        )  # fmt: skip
        return st, empty
    stale_ms = cfg.stale_after_s * 1000.0
    # Stale: a long silence, or a whole batch far behind the state (a device clock reset). One
    # ancient late reading among recent ones is scored, not a reason to forget the baseline.
    if state is not None and (
        int(t_ms.max()) - state.t_last > stale_ms or state.t_last - int(t_ms.max()) > stale_ms
    ):
        state = None
    if state is None:
        t0 = int(t_ms[0])
        st = DeviceState.fresh(names, t0, t0 // bucket_ms)
    else:
        st = state.with_metrics(names).copy()
    # Columns of x in the state's order (metrics the batch lacks are missing, NaN).
    col = {name: i for i, name in enumerate(names)}
    k = len(st.names)
    xs = np.full((n, k), np.nan)
    for j, name in enumerate(st.names):
        if name in col:
            xs[:, j] = x[:, col[name]]
    xs[~np.isfinite(xs)] = np.nan
    # Effective bucket: a late reading joins the current bucket (running maximum).
    b = t_ms // bucket_ms
    eff = np.maximum.accumulate(np.concatenate([[st.bucket], b]))[1:]
    cuts = np.flatnonzero(np.diff(eff)) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [n]])
    score = np.zeros(n)
    top = np.full(n, -1, dtype=np.int64)
    features = np.zeros((n, len(trend_feature_names(st.names))))
    ready = np.zeros(n, dtype=bool)
    # Overflow from absurd values is handled below (the state starts afresh), not warned about.
    with np.errstate(over="ignore", invalid="ignore"):
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            if eff[s] != st.bucket:
                _fold(st, int(eff[s]), cfg)
            run = _score_run(st, xs[s:e], t_ms[s:e], cfg)
            score[s:e], top[s:e] = run.score, run.top
            features[s:e], ready[s:e] = _features(st, cfg)
            _learn_run(st, xs[s:e], t_ms[s:e], run, cfg)
    st.t_last = max(st.t_last, int(t_ms.max()))
    if not st.is_finite():
        # Absurd magnitudes (1e300) overflowed the sums: a state must stay plain finite JSON,
        # so the device starts afresh rather than poisoning every later request.
        st = DeviceState.fresh(st.names, st.t_last, st.bucket)
    score = np.nan_to_num(score, nan=0.0)
    features = np.nan_to_num(features, nan=0.0, posinf=0.0, neginf=0.0)
    return st, DeviceScores(score, score >= cfg.threshold, top, features, ready)
