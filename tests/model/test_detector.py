"""The detector's numpy core and its state: calibration, detection, robustness, round trips."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest

from model.detector import DetectorConfig, score_device
from model.state import STATE_VERSION, DeviceState, dump_state, load_state
from simulator.anomalies import ANOMALY_KINDS
from simulator.fleet import METRICS, Chunk, Fleet, FleetConfig

START = datetime(2026, 1, 1, tzinfo=UTC)
DAY_MS = 86_400_000


def simulate(devices: int, days: float, **kw: float) -> tuple[Fleet, Chunk]:
    fleet = Fleet(FleetConfig(devices=devices, interval_s=10.0, **kw), start=START)
    return fleet, fleet.simulate(int(days * 8640))


def device_arrays(fleet: Fleet, chunk: Chunk, d: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    names = [m for i, m in enumerate(METRICS) if fleet.has[i, d]]
    x = np.stack([chunk.values[m][:, d] for m in names], axis=1)
    x[~chunk.present[:, d]] = np.nan  # a dropped reading: every metric missing
    return names, chunk.times_ms.copy(), x


def test_score_device_warmup_scores_zero_and_names_nothing() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(200, dtype=np.int64) * 10_000
    _, scores = score_device(None, ["a", "b"], t, rng.normal(size=(200, 2)) * 1e3)
    assert scores.score.tolist() == [0.0] * 200
    assert not scores.is_anomaly.any()
    assert (scores.top == -1).all()


def test_score_device_calibrated_on_a_clean_fleet() -> None:
    fleet, chunk = simulate(6, 2.5, seed=11, anomaly_per_day=0.0, degradation_per_day=0.0)
    shares = []
    for d in range(6):
        names, t, x = device_arrays(fleet, chunk, d)
        _, scores = score_device(None, names, t, x)
        after = t - t[0] >= DAY_MS
        assert scores.score.min() >= 0.0
        assert scores.score.max() <= 1.0
        shares.append(float(scores.is_anomaly[after].mean()))
    assert np.mean(shares) < 0.015, shares
    assert max(shares) < 0.05, shares


def test_score_device_flags_injected_spikes_and_level_shifts_with_almost_no_false_alarms() -> None:
    fleet, chunk = simulate(16, 3, seed=2, anomaly_per_day=4.0, degradation_per_day=0.0)
    caught: list[bool] = []
    false_alarm = []
    for d in range(16):
        names, t, x = device_arrays(fleet, chunk, d)
        _, scores = score_device(None, names, t, x)
        label = chunk.anomaly[:, d]
        after = t - t[0] >= DAY_MS
        false_alarm.append(scores.is_anomaly[after & (label == 0)].mean())
        edges = np.flatnonzero(np.diff(np.r_[0, label, 0]) != 0)
        for s, e in zip(edges[::2], edges[1::2], strict=True):
            kind = ANOMALY_KINDS[label[s] - 1]
            if after[s] and kind in ("spike", "level_shift"):
                caught.append(bool(scores.is_anomaly[s:e].any()))
    assert len(caught) >= 25
    assert np.mean(caught) > 0.45, caught
    assert np.mean(false_alarm) < 0.002, false_alarm


def test_score_device_does_not_alarm_on_starts_and_stops() -> None:
    # Clean machines that start and stop every few hours: pressure follows speed squared and
    # temperatures lag, so readings around a switch break the steady relations. Scored as
    # transients they raise no alarm; scored as steady readings, they would.
    fleet, chunk = simulate(6, 3, seed=7, anomaly_per_day=0.0, degradation_per_day=0.0)
    flags = {True: 0, False: 0}
    for d in range(6):
        names, t, x = device_arrays(fleet, chunk, d)
        after = t - t[0] >= DAY_MS
        for transients in (True, False):
            cfg = DetectorConfig(move_threshold=0.5 if transients else float("inf"))
            _, scores = score_device(None, names, t, x, cfg)
            flags[transients] += int(scores.is_anomaly[after].sum())
    assert flags[False] > 100  # the steady model alone does flag the switches
    assert flags[True] <= 0.05 * flags[False], flags


def test_score_device_a_metric_dropping_out_for_an_hour_does_not_break_the_baseline() -> None:
    # A pump loses its pressure reading for an hour while it starts and stops. Learning each
    # covariance entry pairwise then leaves a matrix with a negative eigenvalue, and the pump
    # is flagged for days after; learning the missing metric by its conditional expectation
    # keeps the baseline whole.
    fleet, chunk = simulate(1, 3, seed=2026, anomaly_per_day=0.0, degradation_per_day=0.0)
    names, t, x = device_arrays(fleet, chunk, 0)
    assert names[2] == "pressure_kpa"
    hole = slice(int(1.2 * 8640), int(1.2 * 8640) + 500)
    x[hole, 2] = np.nan
    later = t - t[hole.stop] >= 0
    flagged = {}
    for impute in (True, False):
        cfg = DetectorConfig(impute_missing=impute)
        state, scores = score_device(None, names, t, x, cfg)
        flagged[impute] = float(scores.is_anomaly[later].mean())
        sd = np.sqrt(np.diag(state.cov))
        lowest = float(np.linalg.eigvalsh(state.cov / np.outer(sd, sd)).min())
        if impute:
            assert lowest > 0.0
    assert flagged[True] < 0.001, flagged
    assert flagged[False] > 10 * max(flagged[True], 1e-4), flagged


def test_score_device_notices_an_unusual_combination() -> None:
    rng = np.random.default_rng(1)
    n = 6 * 8640 // 4
    t = np.arange(n, dtype=np.int64) * 40_000
    load = rng.normal(size=n)
    x = np.stack([load + 0.05 * rng.normal(size=n), load + 0.05 * rng.normal(size=n)], 1)
    state, _ = score_device(None, ["in", "out"], t, x)
    t_next = t[-1] + np.array([40_000, 80_000])
    # Both values are 1.5 sd from the mean (ordinary alone), but they should move together.
    odd = np.array([[1.5, 1.5], [1.5, -1.5]])
    _, scores = score_device(state, ["in", "out"], t_next, odd)
    assert scores.score[0] < 0.5
    assert scores.score[1] > 0.99
    assert scores.is_anomaly.tolist() == [False, True]


def test_score_device_split_requests_equal_one_request() -> None:
    fleet, chunk = simulate(1, 1.5, seed=4, anomaly_per_day=6.0)
    names, t, x = device_arrays(fleet, chunk, 0)
    _, whole = score_device(None, names, t, x)
    state, parts = None, []
    for cut in np.array_split(np.arange(len(t)), 37):
        state, scores = score_device(state, names, t[cut], x[cut])
        state = load_state(json.loads(json.dumps(dump_state(state))))
        parts.append(scores)
    np.testing.assert_allclose(np.concatenate([p.score for p in parts]), whole.score, atol=1e-9)
    assert np.concatenate([p.top for p in parts]).tolist() == whole.top.tolist()


def test_score_device_survives_missing_gaps_repeats_and_disorder() -> None:
    rng = np.random.default_rng(3)
    n = 5000
    t = np.cumsum(rng.choice([0, 1_000, 10_000, 60_000], size=n)).astype(np.int64)
    t[2500:] += 3 * DAY_MS  # a gap of three days
    t[::97] -= 3_600_000  # late readings, an hour out of order
    x = rng.normal(size=(n, 4)) * [1, 10, 100, 1000] + [0, 5, 50, 500]
    x[rng.random(x.shape) < 0.2] = np.nan
    x[100] = np.nan  # a reading with no metric at all
    x[200, 1] = np.inf
    state, scores = score_device(None, ["a", "b", "c", "d"], t, x)
    assert scores.score.shape == (n,)
    assert np.isfinite(scores.score).all()
    assert ((scores.score >= 0) & (scores.score <= 1)).all()
    assert state.is_finite()
    json.dumps(dump_state(state), allow_nan=False)


def test_score_device_absurd_magnitudes_keep_the_state_finite() -> None:
    t = np.arange(300, dtype=np.int64) * 1_000
    x = np.where(np.arange(300)[:, None] % 2 == 0, 1e300, -1e300) * np.ones((300, 2))
    state, scores = score_device(None, ["a", "b"], t, x)
    assert state.is_finite()
    assert np.isfinite(scores.score).all()


def test_score_device_stale_state_starts_a_fresh_baseline() -> None:
    t = np.arange(3000, dtype=np.int64) * 10_000
    x = np.random.default_rng(5).normal(size=(3000, 1))
    state, _ = score_device(None, ["a"], t, x)
    later = t[-1] + 30 * DAY_MS + np.arange(3, dtype=np.int64)
    fresh, scores = score_device(state, ["a"], later, np.full((3, 1), 1e6))
    assert fresh.t_first == later[0]
    assert scores.score.tolist() == [0.0, 0.0, 0.0]


def test_score_device_one_ancient_late_reading_keeps_the_baseline() -> None:
    t = np.arange(3000, dtype=np.int64) * 10_000
    x = np.random.default_rng(5).normal(size=(3000, 1))
    state, _ = score_device(None, ["a"], t, x)
    batch_t = np.array([t[-1] - 30 * DAY_MS, t[-1] + 10_000], dtype=np.int64)
    kept, scores = score_device(state, ["a"], batch_t, np.array([[0.0], [0.0]]))
    assert kept.t_first == state.t_first
    assert scores.score.shape == (2,)


def test_score_device_new_metric_extends_the_state() -> None:
    t = np.arange(100, dtype=np.int64) * 10_000
    state, _ = score_device(None, ["a"], t, np.ones((100, 1)))
    grown, scores = score_device(state, ["b", "a"], t[-1:] + 10_000, np.array([[2.0, 1.0]]))
    assert grown.names == ["a", "b"]
    assert grown.mean[0] == pytest.approx(1.0)
    assert scores.score.shape == (1,)


def test_dump_state_is_small_versioned_json() -> None:
    fleet, chunk = simulate(1, 0.5, seed=6)
    names, t, x = device_arrays(fleet, chunk, 0)
    state, _ = score_device(None, names, t, x)
    raw = dump_state(state)
    assert raw["v"] == STATE_VERSION == 4
    assert raw["metrics"] == names
    text = json.dumps(raw, allow_nan=False)
    assert len(text) < 16_000
    again = load_state(json.loads(text))
    assert again is not None
    assert dump_state(again) == raw


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "state",
        [],
        {},
        {"v": 4},
        {"v": 2},
        {"v": 1, "metrics": "a"},
        {"v": 1, "metrics": ["a", "a"]},
        "truncated",
        "non-finite",
        "negative-weight",
        "truncated-trend",
        "negative-trend-weight",
        "pending-trend-not-a-number",
    ],
)
def test_load_state_rejects_foreign_or_malformed(raw: object) -> None:
    good = dump_state(DeviceState.fresh(["a", "b"], 0, 0), version=3)
    if raw == "truncated":
        raw = {**good, "mean": [0.0]}
    elif raw == "non-finite":
        raw = {**good, "mean": [0.0, float("nan")]}
    elif raw == "negative-weight":
        raw = {**good, "w_mean": [0.0, -1.0]}
    elif raw == "truncated-trend":
        raw = {**good, "tr_s": [0.0, 0.0, 0.0]}
    elif raw == "negative-trend-weight":
        raw = {**good, "tg_w": [1.0, -1.0]}
    elif raw == "pending-trend-not-a-number":
        raw = {**good, "pg_s": "0"}
    assert load_state(raw) is None


def test_load_state_keeps_a_version_1_baseline_and_starts_its_trend() -> None:
    fleet, chunk = simulate(1, 1.0, seed=6)
    names, t, x = device_arrays(fleet, chunk, 0)
    state, _ = score_device(None, names, t, x)
    v1 = {
        key: value
        for key, value in dump_state(state, version=3).items()
        if not key.startswith(("tr_", "tg_", "pc_", "pg_"))
    }
    v1["v"] = 1
    old = load_state(v1)
    assert old is not None
    assert np.array_equal(old.cov, state.cov)
    assert not old.tr_w.any()
    _, scores = score_device(old, names, t[-1:] + 10_000, x[-1:])
    assert scores.score.shape == (1,)


def test_load_state_keeps_a_version_2_baseline_and_starts_its_step_scale() -> None:
    fleet, chunk = simulate(1, 1.0, seed=6)
    names, t, x = device_arrays(fleet, chunk, 0)
    state, _ = score_device(None, names, t, x)
    v2 = {
        key: value
        for key, value in dump_state(state, version=3).items()
        if key not in ("last", "last_ok", "step", "w_step", "p_d", "p_dn", "t_move")
    }
    v2["v"] = 2
    old = load_state(v2)
    assert old is not None
    assert np.array_equal(old.cov, state.cov)
    assert np.array_equal(old.tr_s, state.tr_s)
    assert not old.w_step.any()
    assert old.t_move == 0.0


def test_load_state_rejects_a_move_after_the_latest_reading() -> None:
    raw = dump_state(DeviceState.fresh(["a", "b", "c"], 1_000, 0), version=3)
    assert load_state({**raw, "t_move": 1_000.0}) is not None
    assert load_state({**raw, "t_move": 1_001.0}) is None
    moved = DeviceState.fresh(["a", "b", "c"], 1_000, 0)
    moved.t_move = 1_001.0
    assert load_state(json.loads(json.dumps(dump_state(moved)))) is None


def test_score_device_a_steadily_running_machine_is_never_in_a_transient() -> None:
    # Sensor noise is all that changes from one reading to the next: no move, so every
    # reading is scored with the tight relations and feeds the trend.
    rng = np.random.default_rng(4)
    n = 15 * 360
    t = np.arange(n, dtype=np.int64) * 10_000
    load = 1.0 + 0.01 * rng.normal(size=n)
    x = np.stack([100.0 * load, 40.0 * load, 7.0 * load, 55.0 + 0 * load], axis=1)
    x += rng.normal(size=x.shape) * np.array([0.5, 0.2, 0.05, 0.3])
    state, scores = score_device(None, ["rpm", "amps", "flow", "temp"], t, x)
    assert state.t_move == 0.0
    assert scores.ready[-1]
    assert scores.is_anomaly.mean() < 0.002
    jump = x[-1] * np.array([0.5, 0.5, 0.5, 1.0])  # the machine slows to half speed at once
    moved, _ = score_device(state, ["rpm", "amps", "flow", "temp"], t[-1:] + 10_000, jump[None])
    assert moved.t_move == float(t[-1] + 10_000)


def test_score_device_many_metrics_keep_variances_only_and_a_small_state() -> None:
    rng = np.random.default_rng(9)
    names = [f"m{i:03d}" for i in range(100)]
    t = np.arange(400, dtype=np.int64) * 60_000
    cfg = DetectorConfig(warmup_s=3600.0)
    state, scores = score_device(None, names, t, rng.normal(size=(400, 100)), cfg)
    assert (scores.score[-100:] < 0.9).mean() > 0.9
    assert np.count_nonzero(state.cov - np.diag(np.diag(state.cov))) == 0
    raw = dump_state(state)
    assert len(json.dumps(raw)) < 64_000
    again = load_state(json.loads(json.dumps(raw)))
    assert again is not None
    assert again.names == names
