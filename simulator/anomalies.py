"""Injected anomalies, independent of degradation: sensor and transport faults with labels.

Each anomaly has a device, a metric (None for a whole-reading dropout), a kind and an inclusive
span of steps. Anomalies are drawn per chunk (Poisson per device per simulated day), applied to
the chunk's arrays, labelled per reading, and reported as ground truth when drawn (their whole
span is known then). A device carries at most one anomaly at a time so labels stay unambiguous.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from simulator.fleet import Chunk, Fleet

__all__ = ["ANOMALY_KINDS", "Anomaly", "AnomalyInjector"]

ANOMALY_KINDS = ("spike", "level_shift", "stuck", "drift", "dropout", "noisy_burst")
# Duration range in simulated seconds per kind (a spike is one reading).
_DURATION_S = {
    "level_shift": (1800, 3 * 3600),
    "stuck": (600, 2 * 3600),
    "drift": (3600, 6 * 3600),
    "dropout": (30, 3600),
    "noisy_burst": (300, 1800),
}


@dataclass
class Anomaly:
    """One injected anomaly; ``start``/``end`` are inclusive absolute steps."""

    device: int
    metric: int  # index into METRICS, or -1 for a whole-reading dropout
    kind: int  # index into ANOMALY_KINDS
    start: int
    end: int
    magnitude: float
    stuck_value: float | None = None


class AnomalyInjector:
    """Draws, applies and reports anomalies for one :class:`~simulator.fleet.Fleet`."""

    def __init__(self, fleet: Fleet, rng: np.random.Generator) -> None:
        """Bind to ``fleet`` and share its random generator (one seed for everything)."""
        self.fleet = fleet
        self.rng = rng
        self.active: list[Anomaly] = []
        self.busy_until = np.full(fleet.config.devices, -1, dtype=np.int64)
        p = fleet.plate
        # Typical excursion per metric and device: big enough to see, small enough to be real.
        self.scale = np.stack(
            [
                np.full_like(p["vib"], 12.0),
                1.5 * p["vib"],
                0.25 * p["kpa"],
                0.25 * p["rpm"],
                0.35 * p["amps"],
                0.25 * p["flow"],
                np.full_like(p["vib"], 10.0),
            ]
        )

    def _draw(self, s0: int, steps: int) -> None:
        fleet, rng, cfg = self.fleet, self.rng, self.fleet.config
        lam = cfg.anomaly_per_day * steps * cfg.interval_s / 86400.0
        counts = rng.poisson(lam, cfg.devices)
        for d in np.flatnonzero(counts):
            drawn: list[tuple[int, int, int, int, float]] = []
            for _ in range(int(counts[d])):
                start = s0 + int(rng.integers(0, steps))
                kind = int(rng.integers(0, len(ANOMALY_KINDS)))
                name = ANOMALY_KINDS[kind]
                if name == "spike":
                    length = 1
                else:
                    lo, hi = _DURATION_S[name]
                    length = max(1, int(rng.uniform(lo, hi) / cfg.interval_s))
                metrics = np.flatnonzero(fleet.has[:, d])
                metric = int(metrics[rng.integers(0, len(metrics))])
                if name == "dropout" and rng.random() < 0.5:
                    metric = -1
                sign = 1.0 if name == "spike" else float(rng.choice([-1.0, 1.0]))
                mag = sign * rng.uniform(0.6, 1.2) * float(self.scale[max(metric, 0), d])
                drawn.append((start, length, kind, metric, mag))
            # In time order: one anomaly at a time per device, and the share kept must not
            # depend on how long a chunk is (drawn in random order, an early draw late in the
            # chunk would block every earlier one).
            for start, length, kind, metric, mag in sorted(drawn, key=lambda a: a[0]):
                if start <= self.busy_until[d]:
                    continue
                end = start + length - 1
                self.busy_until[d] = end + 1
                self.active.append(Anomaly(int(d), metric, kind, start, end, mag))
                fleet.record_truth(
                    {
                        "type": "anomaly",
                        "kind": ANOMALY_KINDS[kind],
                        "device_id": fleet.device_ids[d],
                        "metric": None if metric < 0 else _metric_name(metric),
                        "start": fleet.time_str(start),
                        "end": fleet.time_str(end),
                    }
                )

    def apply(self, chunk: Chunk, steps: int) -> None:
        """Draw this chunk's anomalies and apply every active one to ``chunk`` in place."""
        s0 = chunk.start_step
        s1 = s0 + steps
        self._draw(s0, steps)
        keep: list[Anomaly] = []
        names = list(chunk.values)
        for a in sorted(self.active, key=lambda a: a.start):
            if a.start >= s1:
                keep.append(a)
                continue
            i0, i1 = max(a.start, s0) - s0, min(a.end + 1, s1) - s0
            if a.end + 1 > s1:
                keep.append(a)
            if i1 <= i0:
                continue
            d, name = a.device, ANOMALY_KINDS[a.kind]
            chunk.anomaly[i0:i1, d] = a.kind + 1
            chunk.anomaly_metric[i0:i1, d] = a.metric
            if a.metric < 0:
                chunk.present[i0:i1, d] = False
                continue
            v = chunk.values[names[a.metric]]
            if name in ("spike", "level_shift"):
                v[i0:i1, d] += a.magnitude
            elif name == "drift":
                frac = (np.arange(i0, i1) + s0 - a.start + 1) / (a.end - a.start + 1)
                v[i0:i1, d] += a.magnitude * frac
            elif name == "noisy_burst":
                v[i0:i1, d] += self.rng.normal(0.0, 0.5 * abs(a.magnitude), i1 - i0)
            elif name == "stuck":
                if a.stuck_value is None:
                    a.stuck_value = float(np.round(v[i0, d], 3))
                v[i0:i1, d] = a.stuck_value
            elif name == "dropout":
                v[i0:i1, d] = np.nan
            if a.metric not in (0, 6):  # physical quantities that cannot go negative
                np.maximum(v[i0:i1, d], 0.0, out=v[i0:i1, d])
        self.active = keep


def _metric_name(index: int) -> str:
    from simulator.fleet import METRICS

    return METRICS[index]
