"""The evaluation: its metric functions on hand-made arrays, both baselines, and the CLI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from model import evaluate
from model.baselines import hst_scores, zscore_scores
from model.evaluation_metrics import (
    EventCounts,
    EventSummary,
    anomaly_windows,
    device_events,
    explained_mask,
    roc_auc,
    roc_curve,
    runs,
    summarise,
    warning_leads,
)


def b(s: str) -> np.ndarray:
    """A boolean array from a string of 0/1."""
    return np.array([c == "1" for c in s])


def labels(s: str) -> np.ndarray:
    return np.array([int(c) for c in s], dtype=np.int8)


def test_runs_and_windows() -> None:
    starts, ends = runs(b("0110011"))
    assert starts.tolist() == [1, 5]
    assert ends.tolist() == [3, 7]
    # Back to back windows of different kinds are two windows.
    s, e, k = anomaly_windows(labels("0223001"))
    assert (s.tolist(), e.tolist(), k.tolist()) == ([1, 3, 6], [3, 4, 7], [1, 2, 0])


def test_explained_mask_extends_trouble_by_the_grace() -> None:
    mask = explained_mask(labels("0100000000"), b("0000001000"), b("0000000000"), 2)
    assert mask.tolist() == [bool(int(c)) for c in "0111001110"]


def test_device_events_caught_windows_grace_and_false_alarms() -> None:
    anomaly = labels("00111000000200000000")
    flags = b("00000011000000000110")
    #            window 1 ends at 5; flag at 6 is 1 step after (grace 2): caught, delay 4
    #            window 2 (kind 1) at 11: never flagged
    #            alarm at 17-18: far from anything, a false alarm
    explained = explained_mask(anomaly, np.zeros(20, bool), np.zeros(20, bool), 2)
    c = device_events(flags, anomaly, explained, np.ones(20, bool), 2, steps_per_day=10)
    assert (c.windows, c.caught, c.alarms, c.false_alarms) == (2, 1, 2, 1)
    assert c.delays_steps == [4]
    assert c.kind_windows == {0: 1, 1: 1}
    assert c.kind_caught == {0: 1, 1: 0}
    assert c.device_days == 2.0
    # Without the grace the late flag misses the window and becomes a false alarm.
    explained0 = explained_mask(anomaly, np.zeros(20, bool), np.zeros(20, bool), 0)
    c0 = device_events(flags, anomaly, explained0, np.ones(20, bool), 0, steps_per_day=10)
    assert (c0.caught, c0.false_alarms) == (0, 2)


def test_device_events_alarm_in_degradation_is_not_false_and_warmup_is_ignored() -> None:
    anomaly = labels("0100000000")
    degrading = b("0000011100")
    flags = b("1100001000")  # the first alarm and window are in the warm-up
    explained = explained_mask(anomaly, degrading, np.zeros(10, bool), 0)
    valid = np.arange(10) >= 3
    c = device_events(flags, anomaly, explained, valid, 0, steps_per_day=7)
    assert (c.windows, c.alarms, c.false_alarms) == (0, 1, 0)
    assert c.device_days == 1.0


def test_summarise_normalises_per_device_day_and_merges_exactly() -> None:
    a = EventCounts(windows=4, caught=2, alarms=5, false_alarms=3, device_days=2.0)
    a.delays_steps, a.kind_windows, a.kind_caught = [1, 3], {0: 4}, {0: 2}
    c = EventCounts(windows=0, caught=0, alarms=1, false_alarms=1, device_days=2.0)
    s = summarise(a.merge(c), interval_s=10.0)
    assert s.precision == pytest.approx(2 / 6)
    assert s.recall == pytest.approx(0.5)
    assert s.f1 == pytest.approx(2 * (1 / 3) * 0.5 / (1 / 3 + 0.5))
    assert s.false_alarms_per_device_day == pytest.approx(1.0)
    assert s.median_delay_s == pytest.approx(20.0)
    assert s.kind_recall == {0: 0.5}
    none = summarise(EventCounts(windows=3, device_days=1.0), 10.0)
    assert none.f1 == 0.0
    assert math.isnan(none.precision)


def test_roc_auc_and_curve_on_a_known_case() -> None:
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    assert roc_auc(y, p) == pytest.approx(0.75)
    assert roc_auc(y, np.ones(4)) == pytest.approx(0.5)  # ties count half
    assert math.isnan(roc_auc(np.zeros(3), np.arange(3)))
    fpr, tpr = roc_curve(y, p)
    assert fpr.tolist() == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert tpr.tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert np.trapezoid(tpr, fpr) == pytest.approx(0.75)


def test_warning_leads_per_failure() -> None:
    degrading = b("0111100111100110")
    failed = b("0000011000011000")
    due = b("0011000000000000")
    valid = np.ones(16, bool)
    # First degradation warned 3 steps before failing, second never, third never fails.
    assert warning_leads(due, degrading, failed, valid) == [3, None]


def test_zscore_flags_a_spike_not_a_flat_stream() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(2000, dtype=np.int64) * 10_000
    x = rng.normal(size=(2000, 2)) * [1.0, 5.0] + [20.0, 100.0]
    x[1500, 1] += 60.0
    x[1600, 0] = np.nan
    s = zscore_scores(t, x, warmup_s=5000.0)
    assert s.argmax() == 1500
    assert s[1500] > 10
    assert np.median(s[600:]) < 1.5
    flat = zscore_scores(t, np.full((2000, 2), 3.0), warmup_s=5000.0)
    assert flat.max() == 0.0
    assert zscore_scores(t[:3], np.full((3, 2), np.nan), 5000.0).tolist() == [0.0] * 3


def test_hst_flags_a_spike_not_a_flat_stream() -> None:
    # A machine alternating between two operating points; the spike lands between them, where
    # HalfSpaceTrees has seen no mass (a value beyond the scaler's range would land in an edge
    # cell and look like the extreme normal values there: its known blind spot).
    rng = np.random.default_rng(1)
    level = np.where((np.arange(1500) // 100) % 2 == 0, 0.0, 10.0)
    x = level[:, None] + rng.normal(size=(1500, 2)) * 0.2
    x[1450, 0] = 5.0
    s = hst_scores(["a", "b"], x)
    assert s[1450] > s[1000:1450].max() + 0.05
    flat = hst_scores(["a", "b"], np.full((600, 2), 5.0))
    assert flat[300:].max() - flat[300:].min() < 1e-9  # nothing stands out
    assert hst_scores(["a"], np.full((2, 1), np.nan)).tolist() == [0.0, 0.0]


def test_main_writes_the_report_without_a_predictor(tmp_path: Path) -> None:
    out = tmp_path / "reports"
    (out).mkdir()
    (out / "failure_roc.png").write_bytes(b"stale")
    argv = [
        "--model", str(tmp_path / "no-model"), "--out", str(out), "--devices", "3",
        "--days", "1", "--validation-devices", "2", "--validation-days", "0.75",
        "--interval", "60",
    ]  # fmt: skip
    assert evaluate.main(argv) == 0
    text = (out / "evaluation.md").read_text()
    assert "| method | threshold | precision | recall | F1 |" in text
    for method in (evaluate.OURS, evaluate.ZSCORE, evaluate.HST):
        assert f"| {method} |" in text
    assert "No trained predictor" in text
    assert "python -m model.evaluate --model" in text
    assert (out / "scores.png").stat().st_size > 1000
    assert not (out / "failure_roc.png").exists()


def test_pick_threshold_keeps_to_the_alarm_budget() -> None:
    def summary(f1: float, share: float) -> EventSummary:
        return EventSummary(0.5, 0.5, f1, 1.0, share, 60.0, {})

    # Lowest first: flagging everything wins on F1, the budget rules it out.
    curve = [(0.0, summary(0.96, 1.0)), (1.0, summary(0.6, 0.04)), (2.0, summary(0.6, 0.01))]
    curve.append((3.0, summary(float("nan"), 0.0)))
    assert evaluate.pick_threshold(curve, 1.0)[0] == 0.0
    assert evaluate.pick_threshold(curve, 0.05)[0] == 2.0  # a tie goes to the higher one
    assert evaluate.pick_threshold(curve, 0.001)[0] == 3.0


def test_day_chunks_join_into_one_chunk() -> None:
    fleet = evaluate.Fleet(evaluate.FleetConfig(devices=2, seed=1), start=evaluate.START)
    chunk = evaluate.simulate_chunks(fleet, 25, 10)
    assert chunk.present.shape == (25, 2)
    assert chunk.values["rpm"].shape == (25, 2)
    assert np.all(np.diff(chunk.times_ms) == 10_000)


class _StubPredictor:
    """A failure model that warns from the long-scale deviation trend (for the plumbing)."""

    horizon_h = 6.0

    def predict(
        self, names: list[str], features: np.ndarray, ready: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        p = 1.0 / (1.0 + np.exp(-features[:, -1]))
        p = np.where(ready, p, np.nan)
        return p, np.nan_to_num(p) > 0.7


def test_main_reports_failure_figures_with_a_predictor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(evaluate, "load_failure_model", lambda _: _StubPredictor())
    argv = [
        "--model", str(tmp_path / "stub"), "--out", str(tmp_path), "--devices", "6",
        "--days", "2", "--seed", "10",
        "--validation-devices", "2", "--validation-days", "0.75", "--interval", "60",
    ]  # fmt: skip
    assert evaluate.main(argv) == 0
    text = (tmp_path / "evaluation.md").read_text()
    assert "| ROC AUC | readings (positive) | failures warned |" in text
    assert "No trained predictor" not in text
    row = text.split("| ROC AUC |")[1].splitlines()[2]  # seed 10: two failures after warm-up
    assert " / 2 |" in row, row
    auc = float(row.split("|")[1])
    assert 0.0 <= auc <= 1.0
    for name in evaluate.FIGURES:
        assert (tmp_path / name).stat().st_size > 1000


def test_main_rejects_a_short_fleet_and_one_seed_for_both(tmp_path: Path) -> None:
    assert evaluate.main(["--out", str(tmp_path), "--days", "0.25"]) == 2
    assert evaluate.main(["--out", str(tmp_path), "--validation-seed", "2026"]) == 2
