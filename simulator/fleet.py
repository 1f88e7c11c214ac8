"""Device fleet physics: duty cycles, load, ambient, noise, hidden health, degradation, failure.

One physics core, :meth:`Fleet.simulate`, advances every device by a chunk of steps at once
(numpy over devices *and* time); :meth:`Fleet.step` is a chunk of one turned into readings, and
the offline generator calls ``simulate`` with day-sized chunks, so the model trains on exactly
what the pipeline later sees. All randomness comes from one ``numpy.random.Generator`` seeded by
:class:`FleetConfig`: the same seed gives the same readings, byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from simulator.anomalies import AnomalyInjector
from simulator.truth import format_time

__all__ = [
    "KINDS",
    "METRICS",
    "MODES",
    "Chunk",
    "Fleet",
    "FleetConfig",
    "kind_metrics",
]

KINDS = ("pump", "compressor", "fan")
METRICS = (
    "temperature_c",
    "vibration_mm_s",
    "pressure_kpa",
    "rpm",
    "current_a",
    "flow_m3h",
    "oil_temp_c",
)
MODES = ("none", "bearing_wear", "seal_leak", "electrical")

# Per kind: which metrics it has and its nameplate (rated rpm, full-load current, rated
# pressure, rated flow, temperature rise at full load, healthy vibration, oil temperature rise).
_NAMEPLATE: dict[str, dict[str, float]] = {
    "pump": {"rpm": 2950, "amps": 42, "kpa": 420, "flow": 120, "rise": 32, "vib": 2.2, "oil": 0},
    "compressor": {
        "rpm": 1480,
        "amps": 85,
        "kpa": 820,
        "flow": 0,
        "rise": 48,
        "vib": 3.0,
        "oil": 38,
    },
    "fan": {"rpm": 1450, "amps": 12, "kpa": 0, "flow": 0, "rise": 18, "vib": 1.4, "oil": 0},
}
_KIND_METRICS: dict[str, tuple[str, ...]] = {
    "pump": METRICS[:6],
    "compressor": (*METRICS[:5], "oil_temp_c"),
    "fan": ("temperature_c", "vibration_mm_s", "rpm", "current_a"),
}
_NOISE_PHI = 0.8  # AR(1) coefficient of sensor noise: neighbouring readings are correlated


def kind_metrics(kind: str) -> tuple[str, ...]:
    """Return the metric names a device of ``kind`` reports, in output order."""
    return _KIND_METRICS.get(kind, ("temperature_c", "vibration_mm_s", "rpm", "current_a"))


@dataclass(frozen=True)
class FleetConfig:
    """What the fleet looks like; frozen so one config always means one fleet.

    Attributes:
        devices: How many machines.
        seed: Seed of the one random generator behind everything.
        interval_s: Simulated seconds between two readings of a device.
        kinds: Machine kinds, assigned round-robin to devices.
        degradation_per_day: Chance per healthy device per simulated day that a mode starts.
        anomaly_per_day: Injected anomalies per device per simulated day (Poisson).
        mean_days_to_maintenance_after_failure: Mean of the exponential repair delay.
    """

    devices: int = 50
    seed: int = 0
    interval_s: float = 10.0
    kinds: tuple[str, ...] = KINDS
    degradation_per_day: float = 0.15
    anomaly_per_day: float = 2.0
    mean_days_to_maintenance_after_failure: float = 0.25


@dataclass
class Chunk:
    """A block of simulated steps for every device, as arrays shaped ``(steps, devices)``.

    ``values`` maps each metric in :data:`METRICS` to its array (NaN where the device's kind
    lacks the metric or a dropout removed it); ``present`` is False where a whole reading was
    dropped. Labels: ``mode`` (index into :data:`MODES`, 0 while healthy or failed),
    ``failed``, ``health`` in [0, 1], ``minutes_to_failure`` (-1 when no failure is coming, 0 while
    failed), ``anomaly`` (0 or 1 + index into ``ANOMALY_KINDS``) and ``anomaly_metric`` (-1 or an
    index into :data:`METRICS`).
    """

    start_step: int
    times_ms: np.ndarray
    values: dict[str, np.ndarray]
    present: np.ndarray
    mode: np.ndarray
    failed: np.ndarray
    health: np.ndarray
    minutes_to_failure: np.ndarray
    anomaly: np.ndarray
    anomaly_metric: np.ndarray


def _ar_filter(u: np.ndarray, a: float, y0: np.ndarray, block: int = 32) -> np.ndarray:
    """Run ``y[t] = a * y[t-1] + u[t]`` along axis 0, vectorised in blocks.

    Inside a block the recurrence is one matrix product with the lower-triangular matrix of
    powers of ``a``; only the carry between blocks is a Python loop (steps / 32 iterations).
    """
    steps = u.shape[0]
    if steps == 1:
        return a * y0[None] + u
    b = min(block, steps)
    pad = (-steps) % b
    if pad:
        u = np.concatenate([u, np.zeros((pad, *u.shape[1:]))])
    idx = np.arange(b)
    lower = np.tril(a ** (idx[:, None] - idx[None, :]).clip(0))
    blocks = np.matmul(lower, u.reshape(-1, b, *u.shape[1:]))
    carry_w = (a ** (idx + 1)).reshape(b, *([1] * (u.ndim - 1)))
    prev = y0
    for k in range(blocks.shape[0]):
        blocks[k] += carry_w * prev
        prev = blocks[k, -1]
    return blocks.reshape(-1, *u.shape[1:])[:steps]


def _hash_uniform(a: np.ndarray, b: np.ndarray, seed: int) -> np.ndarray:
    """Uniform [0, 1) from integers (splitmix64), so per-cycle draws do not depend on chunking."""
    with np.errstate(over="ignore"):
        x = (a.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ (
            b.astype(np.uint64) + np.uint64((seed * 0x632BE59BD9B4E019 + 1) & 0xFFFFFFFFFFFFFFFF)
        )
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


class Fleet:
    """A fleet of machines advanced in simulated time; see the module docstring."""

    def __init__(self, config: FleetConfig, *, start: datetime) -> None:
        """Build the fleet: per-device nameplates, schedules and the initial state.

        Args:
            config: The fleet description.
            start: Simulated time of the first step; timezone-aware (converted to UTC).
        """
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self.config = config
        self.rng = np.random.default_rng(config.seed)
        self.start = start.astimezone(UTC)
        self._start_ms = round(self.start.timestamp() * 1000)
        self._dt_ms = round(config.interval_s * 1000)
        n = config.devices
        self.kinds = [config.kinds[i % len(config.kinds)] for i in range(n)]
        self.device_ids = [f"{k}-{i:04d}" for i, k in enumerate(self.kinds)]
        self._names = [kind_metrics(k) for k in self.kinds]
        self.kind_index = np.array([config.kinds.index(k) for k in self.kinds], dtype=np.int64)
        rng = self.rng
        size = rng.normal(1.0, 0.05, n)
        plate = {
            key: np.array([_NAMEPLATE.get(k, _NAMEPLATE["fan"])[key] for k in self.kinds]) * size
            for key in ("rpm", "amps", "kpa", "flow", "rise", "vib", "oil")
        }
        plate["rpm"] = plate["rpm"] / size  # synchronous speed does not scale with size
        self.plate = plate
        self.has = np.array(
            [[m in kind_metrics(k) for m in METRICS] for k in self.kinds], dtype=bool
        ).T  # (metrics, devices)
        self.site_c = rng.normal(0.0, 3.0, n)
        self.period_s = rng.uniform(2 * 3600, 8 * 3600, n)
        self.duty = rng.uniform(0.6, 0.95, n)
        self.phase_s = rng.uniform(0, 1, n) * self.period_s
        self.device_seed = rng.integers(0, 2**31, n)
        # Filter states carried between chunks.
        self._speed = np.zeros(n)
        self._load = np.full(n, 0.5)
        self._temp = 20.0 + self.site_c
        self._oil = 20.0 + self.site_c
        self._noise = np.zeros((len(METRICS), n))
        self._wander = np.zeros(n)
        # Degradation state (absolute step numbers; -1 / large when not scheduled).
        self._mode = np.zeros(n, dtype=np.int64)
        self._failed = np.zeros(n, dtype=bool)
        self._deg_start = np.zeros(n, dtype=np.int64)
        self._fail_step = np.zeros(n, dtype=np.int64)
        self._maint_step = np.zeros(n, dtype=np.int64)
        self._step = 0
        self._truth: list[dict] = []
        self.anomalies = AnomalyInjector(self, rng)

    # -- time ---------------------------------------------------------------------------------
    @property
    def now(self) -> datetime:
        """Simulated time of the next step."""
        return self.time_of(self._step)

    def time_of(self, step: int) -> datetime:
        """Return the simulated time of absolute step ``step``."""
        return self.start + timedelta(milliseconds=step * self._dt_ms)

    def time_str(self, step: int) -> str:
        """Return the canonical timestamp string of absolute step ``step``."""
        return format_time(self.time_of(step))

    def record_truth(self, record: dict) -> None:
        """Queue a ground-truth record for the next :meth:`drain_truth` (used by the injector)."""
        self._truth.append(record)

    def drain_truth(self) -> list[dict]:
        """Return ground-truth records started or completed since the last call."""
        out, self._truth = self._truth, []
        return out

    # -- degradation state machine (event-driven: loops over events, not steps) ---------------
    def _advance_state(self, s0: int, steps: int) -> dict[str, np.ndarray]:
        cfg, rng, n = self.config, self.rng, self.config.devices
        p_onset = cfg.degradation_per_day * cfg.interval_s / 86400.0
        # Candidate onset steps: a Bernoulli trial per device and step, drawn as counts.
        counts = rng.binomial(steps, p_onset, n)
        onset_d = np.repeat(np.arange(n), counts)
        onset_t = rng.integers(0, steps, len(onset_d))
        order = np.argsort(onset_t, kind="stable")
        onset_abs, onset_d = onset_t[order] + s0, onset_d[order]
        mode = np.empty((steps, n), dtype=np.int64)
        failed = np.empty((steps, n), dtype=bool)
        dstart = np.empty((steps, n), dtype=np.int64)
        dfail = np.empty((steps, n), dtype=np.int64)
        cur, end, oi = s0, s0 + steps, 0
        day_steps = 86400.0 / cfg.interval_s
        while cur < end:
            degrading = (self._mode > 0) & ~self._failed
            nxt = end
            if oi < len(onset_abs):
                nxt = min(nxt, int(onset_abs[oi]))
            if degrading.any():
                nxt = min(nxt, int(self._fail_step[degrading].min()))
            if self._failed.any():
                nxt = min(nxt, int(self._maint_step[self._failed].min()))
            nxt = max(nxt, cur)
            sl = slice(cur - s0, nxt - s0)
            mode[sl], failed[sl] = self._mode, self._failed
            dstart[sl], dfail[sl] = self._deg_start, self._fail_step
            if nxt >= end:
                break
            t = self.time_str(nxt)
            for d in np.flatnonzero(self._failed & (self._maint_step == nxt)):
                self._failed[d], self._mode[d] = False, 0
                self._truth.append(
                    {"type": "maintenance", "device_id": self.device_ids[d], "time": t}
                )
            for d in np.flatnonzero(degrading & (self._fail_step == nxt)):
                self._failed[d] = True
                delay = rng.exponential(cfg.mean_days_to_maintenance_after_failure * day_steps)
                self._maint_step[d] = nxt + max(1, int(delay))
                self._truth.append(
                    {
                        "type": "degradation",
                        "mode": MODES[self._mode[d]],
                        "device_id": self.device_ids[d],
                        "start": self.time_str(int(self._deg_start[d])),
                        "end": t,
                    }
                )
                self._truth.append({"type": "failure", "device_id": self.device_ids[d], "time": t})
            while oi < len(onset_abs) and onset_abs[oi] == nxt:
                d = onset_d[oi]
                oi += 1
                if self._mode[d] == 0 and not self._failed[d]:
                    # A machine without a pressure sensor (a fan) has no seal to leak.
                    modes = (1, 2, 3) if self.has[2, d] else (1, 3)
                    self._mode[d] = modes[int(rng.integers(0, len(modes)))]
                    self._deg_start[d] = nxt
                    hours = rng.uniform(6, 72)  # hours to days from onset to failure
                    self._fail_step[d] = nxt + max(2, int(hours * 3600 / cfg.interval_s))
            cur = nxt
        return {"mode": mode, "failed": failed, "start": dstart, "fail": dfail}

    def start_degradation(self, device: int, mode: str, *, hours: float) -> None:
        """Start degradation ``mode`` on ``device`` now, failing after ``hours`` of simulated time.

        For demos and tests that need a known episode; draws nothing from the random generator,
        so a twin fleet without the call sees exactly the same noise.
        """
        if self._failed[device] or self._mode[device]:
            raise ValueError(f"device {self.device_ids[device]} is already degrading or failed")
        self._mode[device] = MODES.index(mode)
        self._deg_start[device] = self._step
        self._fail_step[device] = self._step + max(2, int(hours * 3600 / self.config.interval_s))

    # -- physics --------------------------------------------------------------------------------
    def simulate(self, steps: int) -> Chunk:
        """Advance every device by ``steps`` intervals and return the block as arrays."""
        cfg, rng, p, n = self.config, self.rng, self.plate, self.config.devices
        s0 = self._step
        abs_t = np.arange(s0, s0 + steps, dtype=np.int64)
        times_ms = self._start_ms + abs_t * self._dt_ms
        sec = (times_ms / 1000.0)[:, None]
        st = self._advance_state(s0, steps)
        mode, failed = st["mode"], st["failed"]
        degrading = (mode > 0) & ~failed
        span = np.maximum(st["fail"] - st["start"], 1)
        prog = np.clip((abs_t[:, None] - st["start"]) / span, 0.0, 1.0)
        health = np.where(degrading, 1.0 - prog**1.5, 1.0)
        health[failed] = 0.0
        sev = 1.0 - health
        mtf = np.where(degrading, (st["fail"] - abs_t[:, None]) * cfg.interval_s / 60.0, -1.0)
        mtf[failed] = 0.0

        # Ambient: daily cycle peaking mid-afternoon, plus a per-site offset.
        day_frac = (sec % 86400.0) / 86400.0
        ambient = 20.0 + self.site_c + 6.0 * np.sin(2 * np.pi * (day_frac - 0.375))
        # Duty cycle: a per-device schedule; a failed machine does not run.
        cyc_pos = (sec + self.phase_s) / self.period_s
        running = ((cyc_pos % 1.0) < self.duty) & ~failed
        cycle = np.floor(cyc_pos).astype(np.int64)
        target = 0.45 + 0.5 * _hash_uniform(
            cycle, np.broadcast_to(self.device_seed, cycle.shape), cfg.seed
        )
        a_w = 0.995
        wander = _ar_filter(rng.standard_normal((steps, n)) * 0.01, a_w, self._wander)
        self._wander = wander[-1]
        a_spd, a_load = np.exp(-cfg.interval_s / 20.0), np.exp(-cfg.interval_s / 120.0)
        speed = _ar_filter((1 - a_spd) * running, a_spd, self._speed)
        load = _ar_filter((1 - a_load) * target, a_load, self._load)
        self._speed, self._load = speed[-1], load[-1]
        load_eff = np.clip(load + wander, 0.0, 1.0)

        bearing, seal, elec = (
            degrading & (mode == 1),
            degrading & (mode == 2),
            degrading & (mode == 3),
        )
        # Electrical fault: brief current spikes with rpm dips, more often as health falls.
        jolt = np.zeros((steps, n))
        if elec.any():
            ti, di = np.nonzero(elec)
            hit = rng.random(len(ti)) < 0.005 + 0.1 * sev[ti, di]
            jolt[ti[hit], di[hit]] = rng.uniform(0.3, 1.2, int(hit.sum()))

        rpm = p["rpm"] * speed * (1.0 - 0.015 * load_eff) * (1.0 - 0.25 * jolt)
        amps = p["amps"] * speed * (0.25 + 0.75 * load_eff)
        amps = amps * (1.0 + 0.35 * sev * seal) * (1.0 + jolt) + 0.05 * p["amps"] * sev * elec
        kpa = p["kpa"] * speed**2 * (0.6 + 0.4 * load_eff) * (1.0 - 0.45 * sev * seal)
        flow = p["flow"] * speed * (0.5 + 0.5 * load_eff) * (1.0 - 0.4 * sev * seal)
        vib = p["vib"] * (0.02 + speed * (0.4 + 0.6 * load_eff)) * (1.0 + 5.0 * sev * bearing)
        heat_extra = np.where(bearing, 30.0 * np.clip(sev - 0.4, 0, None) ** 2 / 0.36, 0.0)
        heat_extra += np.where(elec, 6.0 * sev, 0.0)
        t_target = ambient + speed * (p["rise"] * (0.4 + 0.6 * load_eff) + heat_extra)
        a_t, a_o = np.exp(-cfg.interval_s / 900.0), np.exp(-cfg.interval_s / 1800.0)
        temp = _ar_filter((1 - a_t) * t_target, a_t, self._temp)
        oil = _ar_filter(
            (1 - a_o) * (ambient + speed * p["oil"] * (0.5 + 0.5 * load_eff)), a_o, self._oil
        )
        self._temp, self._oil = temp[-1], oil[-1]

        clean = {
            "temperature_c": temp,
            "vibration_mm_s": vib,
            "pressure_kpa": kpa,
            "rpm": rpm,
            "current_a": amps,
            "flow_m3h": flow,
            "oil_temp_c": oil,
        }
        # Sensor noise: AR(1) per metric, scaled per metric; zero-bounded metrics stay >= 0.
        scale = {
            "temperature_c": 0.25 + 0 * speed,
            "vibration_mm_s": 0.06 * p["vib"] * (0.1 + speed),
            "pressure_kpa": 0.01 * p["kpa"] * (0.05 + speed),
            "rpm": 0.002 * p["rpm"] * speed,
            "current_a": 0.012 * p["amps"] * (0.02 + speed),
            "flow_m3h": 0.012 * p["flow"] * (0.02 + speed),
            "oil_temp_c": 0.2 + 0 * speed,
        }
        gain = np.sqrt(1 - _NOISE_PHI**2)
        values: dict[str, np.ndarray] = {}
        for mi, name in enumerate(METRICS):
            e = _ar_filter(rng.standard_normal((steps, n)) * gain, _NOISE_PHI, self._noise[mi])
            self._noise[mi] = e[-1]
            v = clean[name] + e * scale[name]
            if name not in ("temperature_c", "oil_temp_c"):
                v = np.maximum(v, 0.0)
            values[name] = np.where(self.has[mi], v, np.nan)
        present = np.ones((steps, n), dtype=bool)
        anomaly = np.zeros((steps, n), dtype=np.int8)
        anomaly_metric = np.full((steps, n), -1, dtype=np.int8)
        chunk = Chunk(
            s0, times_ms, values, present, mode * degrading, failed, health, mtf,
            anomaly, anomaly_metric,
        )  # fmt: skip
        self.anomalies.apply(chunk, steps)
        self._step = s0 + steps
        return chunk

    def step(self) -> list[dict]:
        """Advance one interval for every device; return the readings that were sent.

        Returns:
            JSON-ready readings ``{"device_id", "timestamp", "metrics"}``; a failed machine still
            reports (rpm near 0), a dropout omits a metric or the whole reading.
        """
        step = self._step
        chunk = self.simulate(1)
        ts = self.time_str(step)
        rows = {m: np.round(v[0], 3).tolist() for m, v in chunk.values.items()}
        present = chunk.present[0].tolist()
        out = []
        for d, dev in enumerate(self.device_ids):
            if not present[d]:
                continue
            # NaN != NaN: a dropped-out metric is left out of the reading.
            metrics = {m: rows[m][d] for m in self._names[d] if rows[m][d] == rows[m][d]}
            if metrics:
                out.append({"device_id": dev, "timestamp": ts, "metrics": metrics})
        return out
