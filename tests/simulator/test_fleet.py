import json
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from shared.readings import validate_reading
from simulator.anomalies import ANOMALY_KINDS
from simulator.fleet import METRICS, Fleet, FleetConfig, kind_metrics

START = datetime(2026, 3, 1, tzinfo=UTC)
QUIET = {"degradation_per_day": 0.0, "anomaly_per_day": 0.0}


def _steps(fleet, text):
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return round((t - fleet.start).total_seconds() / fleet.config.interval_s)


def _run(config, n):
    fleet = Fleet(config, start=START)
    return [fleet.step() for _ in range(n)], fleet


def test_step_same_seed_is_byte_identical_and_other_seed_differs():
    cfg = FleetConfig(devices=12, seed=3, anomaly_per_day=50.0, degradation_per_day=5.0)
    a, _ = _run(cfg, 300)
    b, _ = _run(cfg, 300)
    c, _ = _run(FleetConfig(devices=12, seed=4, anomaly_per_day=50.0, degradation_per_day=5.0), 300)
    assert json.dumps(a) == json.dumps(b)
    assert json.dumps(a) != json.dumps(c)


def test_step_readings_pass_the_ingest_validator():
    fleet = Fleet(FleetConfig(devices=9, seed=1, anomaly_per_day=200.0), start=START)
    seen = 0
    for _ in range(200):
        now = fleet.now
        for r in fleet.step():
            reading, errors = validate_reading(r, now=now)
            assert errors == [], (r, errors)
            assert reading is not None
            assert set(r["metrics"]) <= set(kind_metrics(r["device_id"].split("-")[0]))
            seen += 1
    assert seen > 9 * 200 * 0.5
    assert fleet.now == START + timedelta(seconds=2000)
    assert fleet.device_ids[:3] == ["pump-0000", "compressor-0001", "fan-0002"]


def test_simulate_health_monotone_between_maintenance_and_failure_stops_machine():
    fleet = Fleet(FleetConfig(devices=30, seed=5, degradation_per_day=1.5), start=START)
    chunks = [fleet.simulate(8640) for _ in range(3)]
    health = np.concatenate([c.health for c in chunks])
    failed = np.concatenate([c.failed for c in chunks])
    rpm = np.concatenate([c.values["rpm"] for c in chunks])
    truth = fleet.drain_truth()
    maint = [r for r in truth if r["type"] == "maintenance"]
    fails = [r for r in truth if r["type"] == "failure"]
    assert len(maint) >= 5
    assert len(fails) >= len(maint)
    rises = np.argwhere(np.diff(health, axis=0) > 0)
    expected = {
        (_steps(fleet, r["time"]) - 1, fleet.device_ids.index(r["device_id"])) for r in maint
    }
    assert {tuple(x) for x in rises} == expected
    for t, d in expected:
        assert health[t + 1, d] == 1.0
        assert failed[t, d]
        assert not failed[t + 1, d]
    assert ((health == 0) == failed).all()
    # Five minutes after a failure the machine has stopped (unless a sensor anomaly says otherwise).
    settled = failed[30:] & failed[:-30]
    rated = fleet.plate["rpm"]
    assert settled.sum() > 100
    assert (rpm[30:][settled] < 0.01 * np.broadcast_to(rated, settled.shape)[settled]).mean() > 0.97
    # Degradation ends at the failure time.
    for r in truth:
        if r["type"] == "degradation":
            assert any(f["device_id"] == r["device_id"] and f["time"] == r["end"] for f in fails)


def _twin(mode, device, hours):
    cfg = FleetConfig(devices=6, seed=11, **QUIET)
    sick, well = Fleet(cfg, start=START), Fleet(cfg, start=START)
    sick.start_degradation(device, mode, hours=hours)
    steps = int(hours * 360) - 1  # stop just before the failure
    return sick, sick.simulate(steps), well.simulate(steps)


def _running(chunk, d, frac_lo, frac_hi):
    n = chunk.health.shape[0]
    lo, hi = int(n * frac_lo), int(n * frac_hi)
    idx = np.arange(lo, hi)
    on = chunk.values["rpm"][lo:hi, d] > 0.9 * np.nanmax(chunk.values["rpm"][:, d])
    return idx[on]


def test_bearing_wear_raises_vibration_first_then_temperature():
    _, s, w = _twin("bearing_wear", 0, 48)
    with np.errstate(divide="ignore", invalid="ignore"):
        vib = s.values["vibration_mm_s"][:, 0] / w.values["vibration_mm_s"][:, 0]
    dtemp = s.values["temperature_c"][:, 0] - w.values["temperature_c"][:, 0]
    early, mid, late = (_running(s, 0, a, b) for a, b in ((0, 0.1), (0.35, 0.45), (0.9, 1.0)))
    assert np.median(vib[early]) < 1.1
    assert np.median(vib[mid]) > 1.6  # vibration has risen ...
    assert np.abs(dtemp[mid]).max() < 0.5  # ... while the temperature has not yet
    assert np.median(vib[late]) > 4.0
    assert dtemp[late].max() > 10.0
    assert (np.diff(s.health[:, 0]) <= 0).all()
    assert s.mode[0, 0] == 1


def test_seal_leak_loses_pressure_while_current_rises():
    _, s, w = _twin("seal_leak", 0, 24)
    with np.errstate(divide="ignore", invalid="ignore"):
        kpa = s.values["pressure_kpa"][:, 0] / w.values["pressure_kpa"][:, 0]
        amps = s.values["current_a"][:, 0] / w.values["current_a"][:, 0]
    early, late = _running(s, 0, 0, 0.1), _running(s, 0, 0.85, 1.0)
    assert abs(np.median(kpa[early]) - 1) < 0.05
    assert abs(np.median(amps[early]) - 1) < 0.05
    assert np.median(kpa[late]) < 0.7
    assert np.median(amps[late]) > 1.2


def test_electrical_fault_spikes_current_and_dips_rpm():
    _, s, w = _twin("electrical", 1, 24)
    for chunk, expect in ((s, True), (w, False)):
        amps, rpm = chunk.values["current_a"][:, 1], chunk.values["rpm"][:, 1]
        run = rpm[:-1] > 1000
        jump = (amps[1:] > 1.25 * amps[:-1]) & (rpm[1:] < 0.95 * rpm[:-1]) & run
        assert bool(jump.sum() > 50) is expect


def test_anomaly_labels_line_up_with_the_data():
    fleet = Fleet(
        FleetConfig(devices=24, seed=2, anomaly_per_day=40.0, **{"degradation_per_day": 0}),
        start=START,
    )
    n = 8640
    chunk = fleet.simulate(n)
    records = [r for r in fleet.drain_truth() if r["type"] == "anomaly"]
    assert {r["kind"] for r in records} == set(ANOMALY_KINDS)
    labelled = np.zeros_like(chunk.anomaly)
    for r in records:
        d = fleet.device_ids.index(r["device_id"])
        a, b = _steps(fleet, r["start"]), min(_steps(fleet, r["end"]), n - 1)
        if a >= n:
            continue
        code = ANOMALY_KINDS.index(r["kind"]) + 1
        assert (chunk.anomaly[a : b + 1, d] == code).all()
        labelled[a : b + 1, d] = code
        if r["metric"] is None:
            assert r["kind"] == "dropout"
            assert not chunk.present[a : b + 1, d].any()
            continue
        m = METRICS.index(r["metric"])
        assert r["metric"] in kind_metrics(fleet.kinds[d])
        assert (chunk.anomaly_metric[a : b + 1, d] == m).all()
        v = chunk.values[r["metric"]][:, d]
        if r["kind"] == "spike":
            assert a == b
            if 0 < a < n - 1:
                far = abs(v[a] - (v[a - 1] + v[a + 1]) / 2)
                assert far > 0.4 * fleet.anomalies.scale[m, d]
        elif r["kind"] == "stuck":
            assert (v[a : b + 1] == v[a]).all()
        elif r["kind"] == "dropout":
            assert np.isnan(v[a : b + 1]).all()
    assert (labelled == chunk.anomaly).all()
    assert chunk.present[labelled == 0].all()


@pytest.mark.parametrize("seed", [0, 1])
def test_step_dropout_omits_the_reading_or_the_metric(seed):
    fleet = Fleet(FleetConfig(devices=6, seed=seed, anomaly_per_day=2000.0), start=START)
    steps = [fleet.step() for _ in range(60)]
    records = [r for r in fleet.drain_truth() if r["kind"] == "dropout"]
    assert records
    for r in records:
        a, b = _steps(fleet, r["start"]), _steps(fleet, r["end"])
        for t in range(a, min(b + 1, 60)):
            got = [x for x in steps[t] if x["device_id"] == r["device_id"]]
            if r["metric"] is None:
                assert got == []
            else:
                assert r["metric"] not in got[0]["metrics"]


def test_step_failed_machine_still_reports_stopped_and_valid():
    fleet = Fleet(FleetConfig(devices=3, seed=8, **QUIET), start=START)
    fleet.start_degradation(0, "seal_leak", hours=0.1)  # fails after 36 steps
    steps = [fleet.step() for _ in range(120)]
    truth = fleet.drain_truth()
    assert [r["type"] for r in truth] == ["degradation", "failure"]
    assert truth[1]["time"] == "2026-03-01T00:06:00.000Z"
    last = next(r for r in steps[-1] if r["device_id"] == "pump-0000")
    assert validate_reading(last, now=fleet.now)[1] == []
    assert last["metrics"]["rpm"] < 5.0
    assert last["metrics"]["current_a"] < 1.0
    assert last["metrics"]["flow_m3h"] < 2.0
