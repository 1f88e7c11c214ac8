"""The batched detector core equals the per-device one it replaced, reading for reading.

``ref_score_device`` below is a verbatim copy of the per-device implementation (one device,
one bucket at a time) as it was before the batched core: the reference every result of
:func:`model.detector.score_devices` (and of ``score_request`` built on it) is checked against.
The reference predates transient handling (``move_threshold``) and the imputation of missing
metrics (``impute_missing``), so comparisons with it turn both off (``AS_REF``) and leave out
the state fields only transients use; the split-request test runs with them on as well.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, NamedTuple

import numpy as np
import pytest

from model import detector, score
from model import request as parsing
from model.detector import (
    DetectorConfig,
    DeviceScores,
    score_device,
    score_devices,
    trend_feature_names,
)
from model.request import RequestError, _device_arrays, _epoch_ms, _parse_ms
from model.score import score_request
from model.state import (
    MAX_FULL_COV,
    TREND_SCALES,
    DeviceState,
    dump_state,
    dump_states,
    load_state,
    load_states,
)
from shared.predictions import CORE_FIELDS
from simulator.fleet import METRICS, Fleet, FleetConfig

START = datetime(2026, 1, 1, tzinfo=UTC)
DAY_MS = 86_400_000
TOL = 1e-12
# Transient handling and imputation off: what the reference implements.
AS_REF: dict[str, Any] = {"move_threshold": float("inf"), "impute_missing": False}
TRANSIENT_FIELDS = ("last", "last_ok", "t_move", "step", "w_step", "p_d", "p_dn")

# ---------------------------------------------------------------------------------------------
# The reference: the per-device implementation, unchanged.
# ---------------------------------------------------------------------------------------------


class _RefRun(NamedTuple):
    score: np.ndarray  # (n,)
    top: np.ndarray  # (n,)
    cond: np.ndarray  # (n, k) signed conditional residual, 0 where not scored
    used: np.ndarray  # (n, k) which metrics were scored
    dev: np.ndarray  # (n,) calibrated deviate, NaN where nothing was scored


def _ref_features(st: DeviceState, cfg: DetectorConfig) -> tuple[np.ndarray, bool]:
    """The trend features of ``st`` as one vector, and whether they are ready."""
    w = np.maximum(st.tr_w, 1e-300)
    mean = np.where(st.tr_w > 0, st.tr_s / w, 0.0)
    rms = np.sqrt(np.where(st.tr_w > 0, st.tr_q / w, 0.0))
    dev = np.where(st.tg_w > 0, st.tg_s / np.maximum(st.tg_w, 1e-300), 0.0)
    parts: list[np.ndarray] = []
    for s in range(TREND_SCALES):
        parts += [mean[s], rms[s], dev[s : s + 1]]
    return np.concatenate(parts), bool(st.tg_w[-1] >= cfg.warmup_readings)


def _ref_score_run(
    st: DeviceState, x: np.ndarray, t_ms: np.ndarray, cfg: DetectorConfig
) -> _RefRun:
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
        return _RefRun(score, top, cond_out, use, dev)
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
    return _RefRun(score, top, cond_out, use, dev)


def _ref_learn_run(
    st: DeviceState, x: np.ndarray, t_ms: np.ndarray, run: _RefRun, cfg: DetectorConfig
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


def _ref_fold(st: DeviceState, bucket: int, cfg: DetectorConfig) -> None:
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


def ref_score_device(
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
                _ref_fold(st, int(eff[s]), cfg)
            run = _ref_score_run(st, xs[s:e], t_ms[s:e], cfg)
            score[s:e], top[s:e] = run.score, run.top
            features[s:e], ready[s:e] = _ref_features(st, cfg)
            _ref_learn_run(st, xs[s:e], t_ms[s:e], run, cfg)
    st.t_last = max(st.t_last, int(t_ms.max()))
    if not st.is_finite():
        # Absurd magnitudes (1e300) overflowed the sums: a state must stay plain finite JSON,
        # so the device starts afresh rather than poisoning every later request.
        st = DeviceState.fresh(st.names, st.t_last, st.bucket)
    score = np.nan_to_num(score, nan=0.0)
    features = np.nan_to_num(features, nan=0.0, posinf=0.0, neginf=0.0)
    return st, DeviceScores(score, score >= cfg.threshold, top, features, ready)


# ---------------------------------------------------------------------------------------------
# Comparison helpers and data.
# ---------------------------------------------------------------------------------------------


def scale(values: object) -> float:
    """The size of an array's entries: what a difference in the last bits is relative to."""
    return max(1.0, float(np.max(np.abs(values), initial=0.0)))


# Trend sums and the weight behind them. Their terms (conditional residuals, calibrated
# deviates) go through a precision matrix whose eigenvalues are floored at ``eigen_floor``:
# the baseline sums of a batched and a per-device implementation differ in the last bit (the
# same sums, added in another order), the precision amplifies that ~1e4 times, and a sum of
# signed terms can cancel. So a trend sum is held to 1e-12 of its largest possible term times
# the number of terms, not to 1e-12 of its (possibly cancelled) value.
TREND_SUMS = {
    "pc_s": "pc_n", "pc_q": "pc_n", "tr_s": "tr_w", "tr_q": "tr_w", "pg_s": "pg_n", "tg_s": "tg_w"
}  # fmt: skip


def assert_same_state(got: DeviceState, want: DeviceState) -> None:
    a, b = dump_state(got, version=3), dump_state(want, version=3)  # the numbers by field
    assert a.keys() == b.keys()
    for key in TRANSIENT_FIELDS:
        del a[key], b[key]
    clip = DetectorConfig().trend_clip
    for key, value in b.items():
        if key in TREND_SUMS:
            atol = TOL * clip * clip * scale(b[TREND_SUMS[key]])
            np.testing.assert_allclose(a[key], value, rtol=TOL, atol=atol, err_msg=key)
        elif isinstance(value, float) or (
            isinstance(value, list) and value and isinstance(value[0], float)
        ):
            np.testing.assert_allclose(
                a[key], value, rtol=TOL, atol=TOL * scale(value), err_msg=key
            )
        else:
            assert a[key] == value, key


def assert_same(
    got: tuple[DeviceState, DeviceScores], want: tuple[DeviceState, DeviceScores]
) -> None:
    (st, sc), (st_ref, sc_ref) = got, want
    np.testing.assert_allclose(sc.score, sc_ref.score, rtol=0, atol=TOL)
    assert sc.is_anomaly.tolist() == sc_ref.is_anomaly.tolist()
    assert sc.top.tolist() == sc_ref.top.tolist()
    assert sc.features.shape == sc_ref.features.shape
    np.testing.assert_allclose(
        sc.features,
        sc_ref.features,
        rtol=TOL,
        atol=TOL * scale(sc_ref.features) if sc_ref.features.size else TOL,
    )
    assert sc.ready.tolist() == sc_ref.ready.tolist()
    assert sc.score.dtype == sc_ref.score.dtype
    assert sc.top.dtype == sc_ref.top.dtype
    assert_same_state(st, st_ref)


Batch = tuple[list[str], np.ndarray, np.ndarray]


def check_requests(
    requests: list[list[Batch]], states: list[DeviceState | None], cfg: DetectorConfig
) -> list[DeviceState]:
    """Score a sequence of requests both ways, carrying state through JSON; compare every one."""
    ref_states = list(states)
    new_states = list(states)
    scored = 0
    for request in requests:
        got = score_devices(
            new_states, [b[0] for b in request], [b[1] for b in request],
            [b[2] for b in request], cfg,
        )  # fmt: skip
        for d, (names, t, x) in enumerate(request):
            want = ref_score_device(ref_states[d], names, t, x, cfg)
            assert_same(got[d], want)
            scored += int((want[1].score > 0).sum())
            ref_states[d] = load_state(json.loads(json.dumps(dump_state(want[0]))))
            new_states[d] = load_state(json.loads(json.dumps(dump_state(got[d][0]))))
    assert scored > 0, "nothing was scored: the comparison would be vacuous"
    return new_states  # type: ignore[return-value]


def fleet_batches(
    devices: int, steps: int, seed: int, *, holes: float = 0.02, **kw: float
) -> tuple[list[list[str]], np.ndarray, list[np.ndarray]]:
    """A simulated mixed fleet (pumps, compressors, fans): names, times and values per device.

    Dropouts are NaN already; ``holes`` adds single missing metrics, so many missing-metric
    patterns occur.
    """
    fleet = Fleet(FleetConfig(devices=devices, seed=seed, interval_s=10.0, **kw), start=START)
    chunk = fleet.simulate(steps)
    rng = np.random.default_rng(seed)
    names, xs = [], []
    for d in range(devices):
        cols = [m for i, m in enumerate(METRICS) if fleet.has[i, d]]
        x = np.stack([chunk.values[m][:, d] for m in cols], axis=1)
        x[~chunk.present[:, d]] = np.nan
        x[rng.random(x.shape) < holes] = np.nan
        names.append(cols)
        xs.append(x)
    return names, chunk.times_ms.copy(), xs


SHORT = DetectorConfig(warmup_s=1800.0, warmup_readings=20.0, **AS_REF)
SHORT_MOVES = DetectorConfig(warmup_s=1800.0, warmup_readings=20.0)


# ---------------------------------------------------------------------------------------------
# The batched core against the reference.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("per_request", [37, 400])
def test_simulated_mixed_fleet_equals_the_reference(per_request: int) -> None:
    names, t, xs = fleet_batches(9, 2400, seed=3, anomaly_per_day=24.0)
    assert len({tuple(n) for n in names}) == 3  # three metric lists: three groups
    requests = [
        [(names[d], t[s : s + per_request], xs[d][s : s + per_request]) for d in range(9)]
        for s in range(0, len(t), per_request)
    ]
    check_requests(requests, [None] * 9, SHORT)


def test_default_config_after_the_full_warmup_equals_the_reference() -> None:
    names, t, xs = fleet_batches(4, 6000, seed=5, anomaly_per_day=12.0)
    warm = [(names[d], t[:5000], xs[d][:5000]) for d in range(4)]
    rest = [(names[d], t[5000:], xs[d][5000:]) for d in range(4)]
    check_requests([warm, rest], [None] * 4, DetectorConfig(**AS_REF))


def test_devices_with_uneven_readings_and_buckets_equal_the_reference() -> None:
    # One group whose devices have 1, a few and many readings, and 1 to ~40 buckets: rounds
    # where only some devices take part.
    rng = np.random.default_rng(7)
    names = ["a", "b", "c"]
    cfg = DetectorConfig(warmup_s=600.0, warmup_readings=10.0, **AS_REF)
    states: list[DeviceState | None] = [None] * 5
    for step in range(4):
        request = []
        for d, n in enumerate([1, 3, 40, 400, 0]):
            n = n * (step + 1) % 700
            t = step * DAY_MS // 8 + np.cumsum(rng.integers(1_000, 60_000, n))
            x = rng.normal(size=(n, 3)) @ np.array([[1, 0.8, 0], [0, 0.6, 0], [0, 0, 2.0]]) + d
            request.append((names, t.astype(np.int64), x))
        states = check_requests([request], states, cfg)


def test_one_busy_device_among_many_quiet_ones_equals_the_reference() -> None:
    # Runs too uneven to pad (300 readings in one bucket against single readings): the
    # per-run fallbacks.
    rng = np.random.default_rng(11)
    names = ["a", "b", "c"]
    t = np.arange(3000, dtype=np.int64) * 20_000
    warm = [
        ref_score_device(None, names, t, rng.normal(size=(3000, 3)) + d, SHORT)[0]
        for d in range(31)
    ]
    start = (t[-1] // 300_000 + 1) * 300_000
    request: list[Batch] = [
        (names, start + np.arange(300, dtype=np.int64) * 900, rng.normal(size=(300, 3)))
    ]
    request += [(names, start + np.array([1_000 * d]), rng.normal(size=(1, 3))) for d in range(30)]
    check_requests([request], warm, SHORT)  # type: ignore[arg-type]


def test_scoring_in_slices_of_runs_equals_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(detector, "_CHUNK_ELEMENTS", 50)  # a slice per run or two
    names, t, xs = fleet_batches(6, 1200, seed=12, anomaly_per_day=24.0)
    requests = [
        [(names[d], t[s : s + 300], xs[d][s : s + 300]) for d in range(6)]
        for s in range(0, len(t), 300)
    ]
    check_requests(requests, [None] * 6, SHORT)


def test_missing_metrics_repeats_disorder_and_gaps_equal_the_reference() -> None:
    rng = np.random.default_rng(3)
    requests: list[list[Batch]] = [[], []]
    for d in range(6):
        n = 3000
        t = np.cumsum(rng.choice([0, 1_000, 10_000, 60_000], size=n)).astype(np.int64)
        t[1500:] += 3 * DAY_MS * (d % 2)  # a gap of three days on some devices
        t[:: 97 - d] -= 3_600_000  # late readings, an hour out of order
        x = rng.normal(size=(n, 4)) * [1, 10, 100, 1000] + [0, 5, 50, 500]
        x[rng.random(x.shape) < 0.2] = np.nan
        x[100 + d] = np.nan  # a reading with no metric at all
        x[200, 1] = np.inf
        x[300, 2] = -np.inf
        requests[0].append((["a", "b", "c", "d"], t[:2000], x[:2000]))
        requests[1].append((["a", "b", "c", "d"], t[2000:], x[2000:]))
    check_requests(requests, [None] * 6, SHORT)


def test_stale_fresh_and_warm_states_in_one_call_equal_the_reference() -> None:
    rng = np.random.default_rng(5)
    t = np.arange(3000, dtype=np.int64) * 10_000
    warm, _ = ref_score_device(None, ["a", "b"], t, rng.normal(size=(3000, 2)), SHORT)
    later = t[-1] + np.arange(1, 301, dtype=np.int64) * 10_000
    request: list[Batch] = [
        (["a", "b"], later, rng.normal(size=(300, 2))),  # warm
        (["a", "b"], later + 30 * DAY_MS, rng.normal(size=(300, 2))),  # stale: a long silence
        (["a", "b"], later - 30 * DAY_MS, rng.normal(size=(300, 2))),  # stale: clock reset
        (["a", "b"], np.r_[t[-1] - 30 * DAY_MS, later[1:]], rng.normal(size=(300, 2))),  # kept
        (["a", "b"], later, rng.normal(size=(300, 2))),  # fresh
        (["a", "b"], later[:0], np.zeros((0, 2))),  # nothing to score: the state is kept
        (["a", "b"], later[:0], np.zeros((0, 2))),  # nothing, no state
    ]
    states = [warm, warm, warm, warm, None, warm, None]
    check_requests([request, request], states, SHORT)


def test_new_and_reordered_metrics_equal_the_reference() -> None:
    rng = np.random.default_rng(6)
    t = np.arange(2000, dtype=np.int64) * 10_000
    ab, _ = ref_score_device(None, ["a", "b"], t, rng.normal(size=(2000, 2)), SHORT)
    ba, _ = ref_score_device(None, ["b", "a"], t, rng.normal(size=(2000, 2)), SHORT)
    later = t[-1] + np.arange(1, 201, dtype=np.int64) * 10_000
    request: list[Batch] = [
        (["a", "b"], later, rng.normal(size=(200, 2))),
        (["b", "a"], later, rng.normal(size=(200, 2))),  # same metrics, other column order
        (["c", "a", "b"], later, rng.normal(size=(200, 3))),  # a new metric: state grows
        (["a"], later, rng.normal(size=(200, 1))),  # a metric the batch lacks: missing
        (["b", "a", "c"], later, rng.normal(size=(200, 3))),
    ]
    states = check_requests([request], [ab, ab, ab, ab, ba], SHORT)
    assert [s.names for s in states] == [
        ["a", "b"],
        ["a", "b"],
        ["a", "b", "c"],
        ["a", "b"],
        ["b", "a", "c"],
    ]


def test_absurd_magnitudes_and_many_metrics_equal_the_reference() -> None:
    rng = np.random.default_rng(9)
    t = np.arange(300, dtype=np.int64) * 60_000
    absurd = np.where(np.arange(300)[:, None] % 2 == 0, 1e300, -1e300) * np.ones((300, 2))
    calm = rng.normal(size=(300, 2))
    wide = [f"m{i:03d}" for i in range(MAX_FULL_COV + 8)]  # variances only
    mid = [f"n{i:02d}" for i in range(20)]  # full covariance, more than a handful of metrics
    request: list[Batch] = [
        (["a", "b"], t, absurd),
        (["a", "b"], t, calm),
        (wide, t, rng.normal(size=(300, len(wide)))),
        (wide, t, rng.normal(size=(300, len(wide))) * 3),
        (mid, t, rng.normal(size=(300, len(mid)))),
        ([], t, np.zeros((300, 0))),  # no metric at all
    ]
    cfg = DetectorConfig(warmup_s=3600.0, warmup_readings=10.0, **AS_REF)
    check_requests([request, request], [None] * len(request), cfg)


def test_score_device_is_the_batched_core_for_one_device() -> None:
    names, t, xs = fleet_batches(1, 1500, seed=8, anomaly_per_day=24.0)
    want = ref_score_device(None, names[0], t, xs[0], SHORT)
    assert_same(score_device(None, names[0], t, xs[0], SHORT), want)
    assert_same(score_devices([None], names[0], [t], [xs[0]], SHORT)[0], want)


def test_score_devices_does_not_modify_the_states_it_is_given() -> None:
    rng = np.random.default_rng(1)
    t = np.arange(500, dtype=np.int64) * 10_000
    state, _ = score_device(None, ["a", "b"], t, rng.normal(size=(500, 2)), SHORT)
    before = json.dumps(dump_state(state))
    score_devices([state, state], ["a", "b"], [t + 5_000_000] * 2, [rng.normal(size=(500, 2))] * 2)
    assert json.dumps(dump_state(state)) == before
    assert len(trend_feature_names(["a", "b"])) == TREND_SCALES * 5


# ---------------------------------------------------------------------------------------------
# score_request on the batched core.
# ---------------------------------------------------------------------------------------------


def fleet_request_readings(devices: int, steps: int, seed: int) -> dict[str, list[dict[str, Any]]]:
    fleet = Fleet(
        FleetConfig(devices=devices, seed=seed, anomaly_per_day=24.0),
        start=START,
    )
    per_device: dict[str, list[dict[str, Any]]] = {d: [] for d in fleet.device_ids}
    for _ in range(steps):
        for r in fleet.step():
            per_device[r["device_id"]].append(
                {"timestamp": r["timestamp"], "metrics": r["metrics"]}
            )
    return per_device


def as_request(
    per_device: dict[str, list[dict[str, Any]]], states: dict[str, Any]
) -> dict[str, Any]:
    devices = [
        {"device_id": d, "state": states.get(d), "readings": r} for d, r in per_device.items()
    ]
    return json.loads(json.dumps({"contract": 1, "devices": devices}))


def test_score_request_equals_the_reference_per_device() -> None:
    per_device = fleet_request_readings(6, 700, seed=4)
    # Odd readings: a missing metric (null), repeats, disorder, another offset, a new metric.
    first = next(iter(per_device))
    readings = per_device[first]
    readings[10]["metrics"] = {**readings[10]["metrics"], "rpm": None}
    readings[20] = dict(readings[19])
    readings[30]["timestamp"] = readings[5]["timestamp"]
    ts = datetime.fromisoformat(readings[40]["timestamp"]).astimezone(timezone(timedelta(hours=2)))
    readings[40]["timestamp"] = ts.isoformat()
    readings[50]["metrics"] = {**readings[50]["metrics"], "extra": 1.5}
    out = score_request(as_request(per_device, {}), SHORT)
    for device in out["devices"]:
        sent = per_device[device["device_id"]]
        names: list[str] = []
        for r in sent:
            names += [m for m in r["metrics"] if m not in names]
        t = np.array(
            [np.floor(datetime.fromisoformat(r["timestamp"]).timestamp() * 1000) for r in sent],
            dtype=np.int64,
        )
        x = np.array(
            [
                [np.nan if r["metrics"].get(m) is None else r["metrics"][m] for m in names]
                for r in sent
            ]
        )
        state, scores = ref_score_device(None, names, t, x, SHORT)
        preds = device["predictions"]
        assert [p["timestamp"] for p in preds] == [r["timestamp"] for r in sent]
        np.testing.assert_allclose(
            [p["anomaly_score"] for p in preds], scores.score, rtol=0, atol=TOL
        )
        assert [p["is_anomaly"] for p in preds] == scores.is_anomaly.tolist()
        assert [p["top_metric"] for p in preds] == [
            state.names[i] if i >= 0 else None for i in scores.top
        ]
        assert load_state(device["state"]) is not None
        assert_same_state(load_state(device["state"]), state)  # type: ignore[arg-type]
    assert any(p["anomaly_score"] > 0.5 for d in out["devices"] for p in d["predictions"])


@pytest.mark.parametrize("cfg", [SHORT, SHORT_MOVES], ids=["no-moves", "moves"])
def test_score_request_split_into_many_requests_equals_one_request(cfg: DetectorConfig) -> None:
    per_device = fleet_request_readings(6, 900, seed=2)
    whole = score_request(as_request(per_device, {}), cfg)
    states: dict[str, Any] = {}
    parts: dict[str, list[dict[str, Any]]] = {d: [] for d in per_device}
    for start in range(0, 900, 113):
        chunk = {d: r[start : start + 113] for d, r in per_device.items()}
        out = json.loads(json.dumps(score_request(as_request(chunk, states), cfg)))
        for device in out["devices"]:
            states[device["device_id"]] = device["state"]
            parts[device["device_id"]].extend(device["predictions"])
    for device in whole["devices"]:
        got = parts[device["device_id"]]
        want = device["predictions"]
        assert [p["timestamp"] for p in got] == [p["timestamp"] for p in want]
        assert [p["top_metric"] for p in got] == [p["top_metric"] for p in want]
        assert [p["is_anomaly"] for p in got] == [p["is_anomaly"] for p in want]
        np.testing.assert_allclose(
            [p["anomaly_score"] for p in got], [p["anomaly_score"] for p in want], rtol=0, atol=1e-9
        )
        # Compared field by field: version 3 is the same numbers as JSON lists.
        state = dump_state(load_state(states[device["device_id"]]), version=3)  # type: ignore[arg-type]
        for key, value in dump_state(load_state(device["state"]), version=3).items():  # type: ignore[arg-type]
            if isinstance(value, float) or (
                isinstance(value, list) and value and isinstance(value[0], float)
            ):
                np.testing.assert_allclose(state[key], value, rtol=1e-9, atol=1e-9, err_msg=key)
            else:
                assert state[key] == value, key


@pytest.mark.parametrize("seed", range(6))
def test_hostile_streams_split_anywhere_score_like_one_request(seed: int) -> None:
    # Correlated metrics with 5% missing values, repeats, readings out of order, a machine
    # that starts and stops, 2 to 8 metrics: one request or many (state through JSON) agree.
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 9))
    n = 4000
    t = np.cumsum(rng.choice([0, 10_000, 10_000, 10_000, 20_000], size=n)).astype(np.int64)
    swap = rng.random(n) < 0.01
    t[swap] -= 30_000
    running = (np.arange(n) // 400) % 3 != 0
    level = np.where(running, 1.0, 0.02)[:, None] * (1.0 + 0.3 * np.arange(k))
    x = level * (1.0 + 0.02 * rng.normal(size=(n, 1))) + 0.01 * rng.normal(size=(n, k))
    x[rng.random(x.shape) < 0.05] = np.nan
    names = [f"m{j}" for j in range(k)]
    cfg = DetectorConfig(warmup_s=1800.0, warmup_readings=20.0)
    _, whole = score_device(None, names, t, x, cfg)
    cuts = np.sort(rng.choice(np.arange(1, n), size=12, replace=False))
    state: DeviceState | None = None
    parts = []
    for s, e in zip([0, *cuts.tolist()], [*cuts.tolist(), n], strict=True):
        state, part = score_device(state, names, t[s:e], x[s:e], cfg)
        state = load_state(json.loads(json.dumps(dump_state(state))))
        parts.append(part)
    assert (whole.score > 0).any()
    np.testing.assert_allclose(np.concatenate([p.score for p in parts]), whole.score, atol=1e-9)
    np.testing.assert_allclose(
        np.concatenate([p.features for p in parts]), whole.features, rtol=1e-7, atol=1e-7
    )


# ---------------------------------------------------------------------------------------------
# score_request's parsing: the fast paths equal the general ones.
# ---------------------------------------------------------------------------------------------


def ref_device_arrays(
    readings: object, where: str
) -> tuple[list[str], np.ndarray, np.ndarray, list[Any]]:
    """The per-reading parser as it was before the fast paths (verbatim)."""
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


def outcome(call: Any, *args: Any) -> Any:
    try:
        return ("ok", call(*args))
    except RequestError as exc:
        return ("error", exc.field, exc.message)


STAMPS = [
    "2026-01-01T00:00:00Z",
    "2026-01-01T00:00:00+00:00",
    "2026-11-27T23:59:59.999999Z",
    "2026-11-27T23:59:59.9999999Z",  # more than microseconds: truncated
    "2026-11-27T12:34:56.1Z",
    "2026-11-27T12:34:56.12+05:30",
    "2026-11-27T12:34:56.123-08:00",
    "2026-11-27T12:34:56.1234+14:00",
    "2026-11-27T12:34:56.12345-12:00",
    "2026-11-27T12:34:56,123Z",
    "2026-11-27T12:34:56.123+0100",
    "2026-11-27T12:34Z",
    "2026-11-27t12:34:56z",
    "1960-02-29T01:02:03.004005Z",  # before the epoch: floor, not truncation
    "1969-12-31T23:59:59.9995Z",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999+00:00",
    "2026-11-27T12:34:60Z",  # no leap seconds
    "2026-13-01T00:00:00Z",
    "2026-02-30T00:00:00Z",
    "2026-11-27T24:00:00Z",
    "2026-11-27T12:34:56+24:00",
    "2026-11-27T12:34:56",  # no offset
    "2026-11-27 12:34:56Z",
    "not a time",
    "2026-11-27T12:34:\u0665\u0666Z",  # digits, but not ASCII ones
    "2026-11-27T12:34:56.\u0661Z",
    "",
    "2026-11-27T12:34:56.123456789012345678901234567890Z",
    None,
    1767225600000,
]


@pytest.mark.parametrize("stamp", STAMPS)
def test_parse_ms_equals_the_general_parser(stamp: object) -> None:
    want = outcome(_epoch_ms, stamp, "t")
    assert outcome(_parse_ms, stamp, "t", {}) == want
    cache: dict[str, int] = {}
    outcome(_parse_ms, stamp, "t", cache)
    assert outcome(_parse_ms, stamp, "t", cache) == want  # and from the cache


def test_parse_ms_equals_the_general_parser_on_random_times() -> None:
    rng = np.random.default_rng(0)
    cache: dict[str, int] = {}
    for us in rng.integers(-(10**15), 10**16, size=3000).tolist():
        ts = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
        offset = timezone(timedelta(minutes=int(rng.integers(-12 * 60, 14 * 60))))
        digits = int(rng.integers(0, 7))
        text = ts.astimezone(offset).isoformat(timespec="microseconds")
        cut = text.index(".")
        text = (
            text[: cut + 1 + digits] + text[cut + 7 :] if digits else text[:cut] + text[cut + 7 :]
        )
        assert _parse_ms(text, "t", cache) == _epoch_ms(text, "t"), text


def readings_case(name: str) -> list[Any]:
    base = [
        {
            "timestamp": f"2026-01-01T00:{i // 6:02d}:{i % 6 * 10:02d}Z",
            "metrics": {"a": 1.0 + i, "b": 2 * i},
        }
        for i in range(12)
    ]
    if name == "uniform":
        return base
    if name == "empty":
        return []
    if name == "no-metrics":
        return [{**r, "metrics": {}} for r in base]
    if name == "null":
        base[3]["metrics"] = {"a": None, "b": 1.0}
        return base
    if name == "null-first":
        base[0]["metrics"] = {"a": None, "b": 1.0}  # names in order of first non-null value
        return base
    if name == "only-null":
        base[5]["metrics"] = {"a": 1.0, "b": 2.0, "c": None}
        return base
    if name == "reordered":
        base[4]["metrics"] = {"b": 1.0, "a": 2.0}
        return base
    if name == "missing-key":
        base[2]["metrics"] = {"b": 1.0}
        return base
    if name == "new-key":
        base[7]["metrics"] = {"a": 1.0, "b": 2.0, "c": 3}
        return base
    if name == "big-int":
        base[1]["metrics"] = {"a": 2**63 + 1, "b": -(2**70)}
        return base
    if name == "bool":
        base[6]["metrics"] = {"a": 1.0, "b": True}
        return base
    if name == "string-after-null":
        base[6]["metrics"] = {"a": None, "b": "hot"}
        return base
    if name == "not-an-object":
        base[2] = ["a"]  # type: ignore[call-overload]
        return base
    if name == "metrics-not-an-object":
        base[2]["metrics"] = [1.0]
        return base
    if name == "odd-stamps":
        base[1]["timestamp"] = "2026-01-01T00:00:10.5+0100"
        base[2]["timestamp"] = "2026-01-01t00:00:20z"
        base[3]["timestamp"] = base[0]["timestamp"]
        return base
    if name == "bad-time":
        base[9]["timestamp"] = "2026-01-01T00:00:00"
        return base
    if name == "bad-time-after-null":
        base[2]["metrics"] = {"a": None}
        base[9]["timestamp"] = 5
        return base
    raise AssertionError(name)


@pytest.mark.parametrize(
    "case",
    [
        "uniform", "empty", "no-metrics", "null", "null-first", "only-null", "reordered",
        "missing-key", "new-key", "big-int", "bool", "string-after-null", "not-an-object",
        "metrics-not-an-object", "odd-stamps", "bad-time", "bad-time-after-null",
    ],
)  # fmt: skip
def test_device_arrays_equal_the_general_parser(case: str) -> None:
    readings = readings_case(case)
    want = outcome(ref_device_arrays, readings, "devices[0].readings")
    got = outcome(_device_arrays, readings, "devices[0].readings")
    if want[0] == "error":
        assert got == want
        return
    names, t, x, stamps = got[1]
    assert names == want[1][0]
    assert t.dtype == np.int64
    assert t.tolist() == want[1][1].tolist()
    assert x.shape == want[1][2].shape
    np.testing.assert_array_equal(x, want[1][2])
    assert stamps == want[1][3]


def mixed_request(seed: int, *, shared_stamps: bool) -> dict[str, Any]:
    """Devices of three kinds (warm, fresh, foreign states), some without readings."""
    rng = np.random.default_rng(seed)
    kinds = (
        ["rpm", "temp", "flow", "amps"],
        ["a", "b"],
        [f"m{i}" for i in range(MAX_FULL_COV + 1)],
    )
    warm = {}
    for j, names in enumerate(kinds):
        t = np.arange(300, dtype=np.int64) * 240_000
        state, _ = score_device(None, names, t, rng.normal(size=(300, len(names))), SHORT)
        warm[j] = dump_state(state)
    start = datetime.fromtimestamp(300 * 240, UTC)
    devices = []
    for d in range(40):
        kind = int(rng.integers(len(kinds)))
        n = int(rng.choice([0, 1, 3, 10, 10]))
        offset = 0 if shared_stamps else int(rng.integers(0, 600))
        readings = [
            {
                "timestamp": (start + timedelta(seconds=offset + 10 * i)).isoformat(),
                "metrics": {
                    m: int(rng.integers(0, 9)) if rng.random() < 0.1 else float(rng.normal())
                    for m in kinds[kind]
                },
            }
            for i in range(n)
        ]
        state = [warm[kind], None, {"v": 99}, warm[(kind + 1) % len(kinds)]][int(rng.integers(4))]
        devices.append({"device_id": f"d{d}", "state": state, "readings": readings})
    return json.loads(json.dumps({"contract": 1, "devices": devices}))


@pytest.mark.parametrize("shared_stamps", [True, False], ids=["shared-stamps", "own-stamps"])
@pytest.mark.parametrize("seed", range(3))
def test_uniform_request_equals_the_per_device_parser(
    seed: int, shared_stamps: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = mixed_request(seed, shared_stamps=shared_stamps)
    assert parsing._uniform_request(request["devices"], {}) is not None  # the fast path applies
    got = score_request(request, SHORT)
    monkeypatch.setattr(parsing, "_uniform_request", lambda devices, cache: None)
    want = score_request(request, SHORT)
    assert json.dumps(got) == json.dumps(want)


@pytest.mark.parametrize(
    "case",
    ["not-an-object", "bad-time", "metrics-not-an-object", "bool", "null", "reordered"],
)
def test_uniform_request_leaves_odd_devices_to_the_per_device_parser(case: str) -> None:
    request = mixed_request(0, shared_stamps=False)
    request["devices"].insert(1, {"device_id": "odd", "readings": readings_case(case)})
    assert parsing._uniform_request(request["devices"], {}) is None
    for device in ({}, {"device_id": ""}, {"device_id": "x", "readings": {}}):
        assert parsing._uniform_request([*request["devices"][:1], device], {}) is None


# ---------------------------------------------------------------------------------------------
# Contract 2: the same readings in columns get the same answer, in columns.
# ---------------------------------------------------------------------------------------------

COLUMNS = CORE_FIELDS  # what the pipeline reads (shared.predictions)
KINDS = (
    ["rpm", "temp", "flow", "amps"],
    ["a", "b"],
    ["solo"],
    [f"m{i}" for i in range(MAX_FULL_COV + 1)],
)


def warm_states() -> dict[int, dict[str, Any]]:
    rng = np.random.default_rng(99)
    t = np.arange(300, dtype=np.int64) * 240_000
    return {
        j: dump_state(score_device(None, names, t, rng.normal(size=(300, len(names))), SHORT)[0])
        for j, names in enumerate(KINDS)
    }


WARM = warm_states()


def columnar_pair(seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The same random readings as a contract-1 request and as a contract-2 one (both JSON).

    Devices of several kinds, some with their metrics in another order, a metric more or
    less, none or many readings, nulls (in contract 1 sometimes a null, sometimes a metric
    left out), whole null columns and rows, shared or own timestamps, repeated ones, ints
    among the floats; warm, fresh, foreign and other kinds' states.
    """
    rng = np.random.default_rng(seed)
    start = datetime.fromtimestamp(300 * 240, UTC)
    shared_stamps = seed % 2 == 0
    one, two = [], []
    for d in range(int(rng.integers(1, 40))):
        kind = int(rng.integers(len(KINDS)))
        names = list(KINDS[kind])
        if rng.random() < 0.2:
            names = [names[i] for i in rng.permutation(len(names))]
        if rng.random() < 0.1:
            names.append("extra")
        if rng.random() < 0.1 and len(names) > 1:
            names.pop(int(rng.integers(len(names))))
        n = int(rng.choice([0, 1, 2, 10, 10, 10, 30]))
        offset = 0 if shared_stamps else int(rng.integers(0, 600))
        stamps = [
            (start + timedelta(seconds=offset + 10 * i)).isoformat(timespec="milliseconds")
            for i in range(n)
        ]
        if n > 3 and rng.random() < 0.2:
            stamps[2] = stamps[0]  # a repeat
            stamps[3] = stamps[3].replace("+00:00", "Z")
        nulls = float(rng.choice([0.0, 0.0, 0.0, 0.1, 0.5]))
        rows = [
            [
                None
                if rng.random() < nulls
                else int(rng.integers(0, 9))
                if rng.random() < 0.05
                else float(rng.normal(10.0 * (k + 1), 1.0))
                for k in range(len(names))
            ]
            for _ in range(n)
        ]
        if n > 4 and rng.random() < 0.2:
            for row in rows:
                row[0] = None  # a metric never sent
            rows[4] = [None] * len(names)  # a reading of nothing
        explicit = rng.random() < 0.5  # contract 1: null, or the metric left out
        readings = [
            {
                "timestamp": stamp,
                "metrics": {
                    m: v for m, v in zip(names, row, strict=True) if v is not None or explicit
                },
            }
            for stamp, row in zip(stamps, rows, strict=True)
        ]
        choice = int(rng.integers(4))
        state = [WARM[kind], None, {"v": 99}, WARM[(kind + 1) % len(KINDS)]][choice]
        device_id = f"dev-{d}"
        one.append({"device_id": device_id, "state": state, "readings": readings})
        two.append(
            {
                "device_id": device_id,
                "state": state,
                "timestamps": stamps,
                "metrics": names if n or rng.random() < 0.5 else [],
                "values": rows,
            }
        )
    return (
        json.loads(json.dumps({"contract": 1, "devices": one})),
        json.loads(json.dumps({"contract": 2, "devices": two})),
    )


def in_columns(answer: dict[str, Any]) -> dict[str, Any]:
    """A contract-1 answer with each device's predictions turned into contract 2's columns."""
    return {
        **answer,
        "devices": [
            {**device, "predictions": {c: [p[c] for p in device["predictions"]] for c in COLUMNS}}
            for device in answer["devices"]
        ],
    }


@pytest.mark.parametrize("seed", range(12))
def test_contract_2_answers_what_contract_1_answers_in_columns(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    one, two = columnar_pair(seed)
    assert parsing._columnar_request(two["devices"], {}) is not None  # the fast path applies
    fake = FakeFailure(KINDS[seed % 2])
    monkeypatch.setattr(score, "_failure", fake)
    want = json.dumps(in_columns(score_request(one, SHORT_MOVES)))
    got = score_request(two, SHORT_MOVES)
    assert json.dumps(got) == want  # the same values, types and order: bools stay bools
    for device in got["devices"]:
        assert list(device["predictions"]) == list(COLUMNS)
    if seed == 0:
        scored = [p for d in got["devices"] for p in d["predictions"]["anomaly_score"]]
        assert max(scored) > 0.0  # warm devices were scored, not only learned from
        probs = [p for d in got["devices"] for p in d["predictions"]["failure_probability"]]
        assert any(p is not None for p in probs)
    monkeypatch.setattr(parsing, "_columnar_request", lambda devices, cache: None)
    assert json.dumps(score_request(two, SHORT_MOVES)) == want  # and device by device


@pytest.mark.parametrize("seed", range(12, 16))
def test_contract_2_answers_through_run_what_contract_1_answers(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    one, two = columnar_pair(seed)
    monkeypatch.setattr(score, "_config", SHORT_MOVES)
    monkeypatch.setattr(score, "_failure", FakeFailure(KINDS[0]))
    want = in_columns(json.loads(json.dumps(score.run(json.dumps(one)))))
    got = score.run(json.dumps(two).encode())
    assert json.dumps(got) == json.dumps(want)


def test_contract_2_scores_missing_values_as_contract_1_leaves_them_out() -> None:
    # Contract 1 names a device's metrics in order of first value: a metric null in the first
    # readings comes after the others, one never sent is not a metric of the device at all.
    stamps = [f"2026-01-01T00:00:{10 * i:02d}Z" for i in range(5)]
    rows = [[None, 1.0, None], [2.0, 1.5, None], [2.5, None, None], [3.0, 2.0, None], [None] * 3]
    two = {
        "contract": 2,
        "devices": [
            {"device_id": "d", "timestamps": stamps, "metrics": ["a", "b", "c"], "values": rows}
        ],
    }
    sent = [{"b": 1.0}, {"a": 2.0, "b": 1.5}, {"a": 2.5}, {"a": 3.0, "b": 2.0}, {}]
    readings = [{"timestamp": t, "metrics": m} for t, m in zip(stamps, sent, strict=True)]
    one = {"contract": 1, "devices": [{"device_id": "d", "readings": readings}]}
    [(_, names, t, x, got_stamps)] = parsing._columnar_request(two["devices"], {})  # type: ignore[misc]
    assert names == ["b", "a"]
    np.testing.assert_array_equal(
        x, [[1.0, np.nan], [1.5, 2.0], [np.nan, 2.5], [2.0, 3.0], [np.nan, np.nan]]
    )
    assert t.tolist() == [ms * 10_000 + 1_767_225_600_000 for ms in range(5)]
    assert got_stamps == stamps
    answer = score_request(two, SHORT_MOVES)["devices"][0]
    assert answer["state"]["metrics"] == ["b", "a"]
    assert json.dumps(answer) == json.dumps(
        in_columns(score_request(one, SHORT_MOVES))["devices"][0]
    )


def test_contract_2_device_without_readings_gets_its_state_and_empty_columns() -> None:
    devices = [
        {"device_id": "empty", "state": WARM[0], "timestamps": [], "metrics": [], "values": []},
        {"device_id": "named", "state": None, "timestamps": [], "metrics": ["a"], "values": []},
    ]
    out = score.run(json.dumps({"contract": 2, "devices": devices}))
    assert [d["predictions"] for d in out["devices"]] == [{c: [] for c in COLUMNS}] * 2
    assert out["devices"][0]["state"] == WARM[0]
    assert out["devices"][1]["state"]["metrics"] == []


def test_contract_2_takes_any_mapping_and_list_like_contract_1() -> None:
    # Not from JSON: objects that are Mappings but not dicts go device by device.
    from types import MappingProxyType

    one, two = columnar_pair(3)
    odd = {**two, "devices": [MappingProxyType(d) for d in two["devices"]]}
    assert parsing._columnar_request(odd["devices"], {}) is None
    assert json.dumps(score_request(odd, SHORT_MOVES)) == json.dumps(
        in_columns(score_request(one, SHORT_MOVES))
    )


def odd_columns(case: str) -> dict[str, Any]:
    device: dict[str, Any] = {
        "device_id": "odd",
        "timestamps": ["2026-01-01T00:00:00Z", "2026-01-01T00:00:10Z"],
        "metrics": ["a", "b"],
        "values": [[1.0, 2.0], [3.0, None]],
    }
    changes: dict[str, tuple[str, Any]] = {
        "not-an-object": ("", None),
        "no-id": ("device_id", None),
        "empty-id": ("device_id", ""),
        "stamps-not-a-list": ("timestamps", "2026-01-01T00:00:00Z"),
        "bad-stamp": ("timestamps", ["2026-01-01T00:00:00Z", "2026-01-01T00:00:10"]),
        "stamp-not-a-string": ("timestamps", ["2026-01-01T00:00:00Z", 5]),
        "short-stamps": ("timestamps", ["2026-01-01T00:00:00Z"]),
        "metrics-not-a-list": ("metrics", {"a": 0, "b": 1}),
        "metric-not-a-string": ("metrics", ["a", 2]),
        "metric-a-list": ("metrics", ["a", ["b"]]),
        "empty-metric": ("metrics", ["a", ""]),
        "repeated-metric": ("metrics", ["a", "a"]),
        "no-metrics": ("metrics", []),
        "values-not-a-list": ("values", {"0": [1.0, 2.0]}),
        "row-not-a-list": ("values", [[1.0, 2.0], {"a": 3.0}]),
        "short-row": ("values", [[1.0, 2.0], [3.0]]),
        "long-row": ("values", [[1.0, 2.0], [3.0, 4.0, 5.0]]),
        "string-value": ("values", [[1.0, "2.0"], [3.0, 4.0]]),
        "bool-value": ("values", [[1.0, 2.0], [True, 4.0]]),
        "list-value": ("values", [[1.0, [2.0]], [3.0, 4.0]]),
    }
    key, value = changes[case]
    if not key:
        return value
    if value is None:
        del device[key]
    else:
        device[key] = value
    return device


ODD_COLUMNS = [
    "not-an-object", "no-id", "empty-id", "stamps-not-a-list", "bad-stamp", "stamp-not-a-string",
    "short-stamps", "metrics-not-a-list", "metric-not-a-string", "metric-a-list", "empty-metric",
    "repeated-metric", "no-metrics", "values-not-a-list", "row-not-a-list", "short-row",
    "long-row", "string-value", "bool-value", "list-value",
]  # fmt: skip


@pytest.mark.parametrize("case", ODD_COLUMNS)
def test_columnar_request_leaves_odd_devices_to_the_per_device_parser(case: str) -> None:
    _, two = columnar_pair(0)
    devices = [*two["devices"][:2], odd_columns(case)]
    assert parsing._columnar_request(devices, {}) is None
    with pytest.raises(RequestError) as caught:
        parsing._columnar_devices(devices, {})
    assert caught.value.field.startswith("devices[2]")


# ---------------------------------------------------------------------------------------------
# The failure predictor in the response.
# ---------------------------------------------------------------------------------------------


class FakeFailure:
    """Answers for one metric set only, with a NaN row (trend not ready) and a due row."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.calls: list[tuple[list[str], tuple[int, ...], int]] = []

    def predict(self, names: list[str], features: np.ndarray, ready: np.ndarray) -> Any:
        self.calls.append((list(names), features.shape, int(ready.sum())))
        if names != self.names:
            return None
        n = features.shape[0]
        prob = np.linspace(0.0, 1.0, n)
        prob[0] = np.nan
        return prob, prob >= 0.5


def test_score_request_fills_failure_fields_from_the_predictor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    per_device = fleet_request_readings(3, 30, seed=1)
    kinds = {}
    for d, readings in per_device.items():
        names: list[str] = []
        for r in readings:
            names += [m for m in r["metrics"] if m not in names and r["metrics"][m] is not None]
        kinds[d] = names
    first = next(iter(per_device))
    fake = FakeFailure(kinds[first])
    monkeypatch.setattr(score, "_failure", fake)
    out = score_request(as_request(per_device, {}), SHORT)
    json.dumps(out, allow_nan=False)
    for device in out["devices"]:
        preds = device["predictions"]
        if kinds[device["device_id"]] != kinds[first]:
            assert {p["failure_probability"] for p in preds} == {None}
            assert {p["maintenance_due"] for p in preds} == {None}
            continue
        n = len(preds)
        assert preds[0]["failure_probability"] is None
        assert preds[0]["maintenance_due"] is None
        prob = np.linspace(0.0, 1.0, n)
        assert [p["failure_probability"] for p in preds[1:]] == prob[1:].tolist()
        assert [p["maintenance_due"] for p in preds[1:]] == (prob[1:] >= 0.5).tolist()
        assert all(type(p["maintenance_due"]) is bool for p in preds[1:])
    assert [c[1][0] for c in fake.calls] == [len(r) for r in per_device.values()]
    assert all(c[1][1] == len(trend_feature_names(c[0])) for c in fake.calls)


def test_init_loads_the_failure_model_from_the_model_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    seen: list[object] = []

    def load(model_dir: object) -> FakeFailure:
        seen.append(model_dir)
        return FakeFailure(["nothing"])

    monkeypatch.setattr(score, "load_failure_model", load)
    monkeypatch.setattr(score, "_failure", score._failure)
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(tmp_path))
    score.init()
    assert seen == [str(tmp_path)]
    assert isinstance(score._failure, FakeFailure)
    monkeypatch.delenv("AZUREML_MODEL_DIR")
    score.init()
    assert seen == [str(tmp_path), None]


# ---------------------------------------------------------------------------------------------
# States loaded and dumped many at a time equal one at a time.
# ---------------------------------------------------------------------------------------------


def test_load_states_and_dump_states_equal_one_at_a_time() -> None:
    rng = np.random.default_rng(2)
    t = np.arange(400, dtype=np.int64) * 60_000
    raws: list[object] = []
    for names in (["a", "b"], ["x", "y"], ["a"], [], [f"m{i}" for i in range(MAX_FULL_COV + 2)]):
        state, _ = score_device(None, names, t, rng.normal(size=(400, len(names))), SHORT)
        raws.append(dump_state(state, version=3))
    good = raws[0]
    v1 = {
        key: value
        for key, value in good.items()
        if not key.startswith(("tr_", "tg_", "pc_", "pg_"))
    }
    v1["v"] = 1
    raws += [
        v1,
        None,
        {**good, "mean": [0.0, float("nan")]},
        {**good, "w_cov": [0.0, -1.0, 0.0]},
        {**good, "pg_n": -1.0},
        {**good, "pg_s": True},
        {**good, "cov": [1.0, 0.0, -2.0]},  # a negative variance
        {**good, "mean": [10**400, 0.0]},  # too large for a float
        {**good, "t_first": 1.5},
        {**good, "tr_w": [1.0, 2.0, 3.0]},
    ]
    together = load_states(raws)
    alone = [load_state(raw) for raw in raws]
    assert [s is None for s in together] == [s is None for s in alone]
    assert [s is None for s in together[:6]] == [False] * 6
    assert all(s is None for s in together[6:])
    kept = [s for s in together if s is not None]
    assert dump_states(kept) == [dump_state(s) for s in kept]
    assert dump_states(kept, version=3) == [dump_state(s, version=3) for s in kept]
    assert dump_states(kept, version=3)[:5] == raws[:5]
    packed = dump_states(kept)
    again = load_states([*packed, *raws[6:]])
    assert [s is None for s in again] == [False] * len(packed) + [True] * len(raws[6:])
    assert dump_states(again[: len(packed)]) == packed  # type: ignore[arg-type]
    assert dump_states([]) == []
