"""Event-level anomaly metrics and failure-warning metrics, as small pure functions.

Everything works on one device's readings on a regular time grid (index = step), so durations
are step counts times the interval. Definitions (the report repeats them):

* An **anomaly window** is a run of readings with the same nonzero anomaly label. It is
  *caught* when any reading in it, or in the ``grace`` steps after its end, is flagged; its
  *delay* is the time from its start to that first flag.
* An **alarm event** is a run of consecutive flagged readings. It is a *false alarm* when it
  overlaps no *explained* reading: an anomaly window, a degradation or a failed period, each
  extended by the grace after its end.
* **Precision** is the share of alarm events that are not false alarms, **recall** the share of
  windows caught, **F1** their harmonic mean (precision and recall count different events, the
  usual event-wise compromise: one long alarm cannot catch many windows, many alarms on one
  window do not count as many catches).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.stats import rankdata

__all__ = [
    "EventCounts",
    "EventSummary",
    "anomaly_windows",
    "device_events",
    "explained_mask",
    "roc_auc",
    "roc_curve",
    "runs",
    "summarise",
    "warning_leads",
]


def runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(starts, ends)`` (end exclusive) of the runs of True in a 1-d ``mask``."""
    edges = np.flatnonzero(np.diff(np.r_[0, np.asarray(mask, dtype=np.int8), 0]))
    return edges[::2], edges[1::2]


def anomaly_windows(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(starts, ends, kinds)`` of the runs of equal nonzero ``labels``.

    ``kinds`` is the label minus one (an index into ``ANOMALY_KINDS``); two back-to-back
    anomalies of different kinds are two windows.
    """
    labels = np.asarray(labels)
    change = np.flatnonzero(np.diff(np.r_[0, labels, 0]))
    starts, ends = change[:-1], change[1:]
    keep = labels[starts] != 0
    starts, ends = starts[keep], ends[keep]
    return starts, ends, labels[starts].astype(np.int64) - 1


def explained_mask(
    anomaly: np.ndarray, degrading: np.ndarray, failed: np.ndarray, grace: int
) -> np.ndarray:
    """Readings where an alarm is not false: labelled trouble, or within ``grace`` after it."""
    trouble = (np.asarray(anomaly) != 0) | np.asarray(degrading, bool) | np.asarray(failed, bool)
    out = trouble.copy()
    for e in runs(trouble)[1]:
        out[e : e + grace] = True
    return out


@dataclass
class EventCounts:
    """Event counts that add up over devices (``merge``), so a fleet summary is exact."""

    windows: int = 0
    caught: int = 0
    alarms: int = 0
    false_alarms: int = 0
    device_days: float = 0.0
    normal: int = 0
    normal_flagged: int = 0
    delays_steps: list[int] = field(default_factory=list)
    kind_windows: dict[int, int] = field(default_factory=dict)
    kind_caught: dict[int, int] = field(default_factory=dict)

    def merge(self, other: EventCounts) -> EventCounts:
        """Return the sum of two counts (neither is modified)."""
        kinds = set(self.kind_windows) | set(other.kind_windows)
        return EventCounts(
            self.windows + other.windows,
            self.caught + other.caught,
            self.alarms + other.alarms,
            self.false_alarms + other.false_alarms,
            self.device_days + other.device_days,
            self.normal + other.normal,
            self.normal_flagged + other.normal_flagged,
            self.delays_steps + other.delays_steps,
            {k: self.kind_windows.get(k, 0) + other.kind_windows.get(k, 0) for k in kinds},
            {k: self.kind_caught.get(k, 0) + other.kind_caught.get(k, 0) for k in kinds},
        )


def device_events(
    flags: np.ndarray,
    anomaly: np.ndarray,
    explained: np.ndarray,
    valid: np.ndarray,
    grace: int,
    steps_per_day: float,
) -> EventCounts:
    """Count one device's windows, catches and alarm events over its ``valid`` readings.

    Args:
        flags: Per reading, whether the method flagged it (False where no reading arrived).
        anomaly: Per reading, the anomaly label (0 none, else 1 + kind).
        explained: See :func:`explained_mask`.
        valid: Readings that are scored at all (after the warm-up); flags outside are dropped
            and windows starting outside are not counted, so nobody is judged on a cold start.
        grace: Steps after a window's end in which a flag still catches it.
        steps_per_day: Readings per day, to turn valid steps into device-days.
    """
    valid = np.asarray(valid, bool)
    flags = np.asarray(flags, bool) & valid
    starts, ends, kinds = anomaly_windows(anomaly)
    keep = valid[starts] if starts.size else np.zeros(0, bool)
    starts, ends, kinds = starts[keep], ends[keep], kinds[keep]
    flagged = np.flatnonzero(flags)
    # The first flag at or after each window's start (-1 when there is none).
    first = np.r_[flagged, -1][np.searchsorted(flagged, starts)]
    hit = (first >= 0) & (first < ends + grace)
    a_starts, a_ends = runs(flags)
    explained = np.asarray(explained, bool)
    cum = np.r_[0, np.cumsum(explained)]
    false = cum[a_ends] - cum[a_starts] == 0
    normal = valid & ~explained
    counts = EventCounts(
        windows=int(starts.size),
        caught=int(hit.sum()),
        alarms=int(a_starts.size),
        false_alarms=int(false.sum()),
        device_days=float(valid.sum()) / steps_per_day,
        normal=int(normal.sum()),
        normal_flagged=int((flags & normal).sum()),
        delays_steps=(first[hit] - starts[hit]).astype(int).tolist(),
    )
    for k in np.unique(kinds).tolist():
        counts.kind_windows[k] = int((kinds == k).sum())
        counts.kind_caught[k] = int((hit & (kinds == k)).sum())
    return counts


@dataclass(frozen=True)
class EventSummary:
    """Fleet-level figures from :class:`EventCounts`; NaN where undefined (nothing to count)."""

    precision: float
    recall: float
    f1: float
    false_alarms_per_device_day: float
    normal_flagged_share: float
    median_delay_s: float
    kind_recall: dict[int, float]


def summarise(counts: EventCounts, interval_s: float) -> EventSummary:
    """Turn counts into precision, recall, F1, false alarms per device-day and median delay."""
    nan = float("nan")
    precision = 1.0 - counts.false_alarms / counts.alarms if counts.alarms else nan
    recall = counts.caught / counts.windows if counts.windows else nan
    if counts.alarms and counts.windows and precision + recall > 0:
        f1 = 2 * precision * recall / (precision + recall)
    else:
        f1 = 0.0 if counts.windows else nan
    fa = counts.false_alarms / counts.device_days if counts.device_days else nan
    share = counts.normal_flagged / counts.normal if counts.normal else nan
    delay = float(np.median(counts.delays_steps)) * interval_s if counts.delays_steps else nan
    kind_recall = {k: counts.kind_caught.get(k, 0) / n for k, n in counts.kind_windows.items() if n}
    return EventSummary(precision, recall, f1, fa, share, delay, kind_recall)


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties count half); NaN with one class only."""
    y = np.asarray(y, bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(p, float))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_curve(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(fpr, tpr)`` from (0, 0) to (1, 1), one point per distinct score."""
    y = np.asarray(y, bool)
    order = np.argsort(-np.asarray(p, float), kind="stable")
    ps, ys = np.asarray(p, float)[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(ps)), ps.size - 1]  # end of each tie group
    tp, fp = np.cumsum(ys)[last], np.cumsum(~ys)[last]
    return (
        np.r_[0.0, fp / max(int((~y).sum()), 1)],
        np.r_[0.0, tp / max(int(y.sum()), 1)],
    )


def warning_leads(
    due: np.ndarray, degrading: np.ndarray, failed: np.ndarray, valid: np.ndarray
) -> list[int | None]:
    """Per degradation that ends in a failure in ``valid`` time: steps of warning, or None.

    The lead is from the first ``due`` reading inside the degradation to the failure (the
    first failed reading); ``None`` when the degradation was never flagged due. A degradation
    still running at the end of the data has no failure yet and is not counted.
    """
    failed = np.asarray(failed, bool)
    due = np.asarray(due, bool)
    out: list[int | None] = []
    for s, e in zip(*runs(degrading), strict=True):
        if e >= failed.size or not failed[e] or not valid[e]:
            continue
        hits = np.flatnonzero(due[s:e])
        out.append(int(e - s - hits[0]) if hits.size else None)
    return out
