"""Per-device detector state: a few numbers per metric, versioned, plain JSON with finite floats.

The state travels with every request (the pipeline stores it between calls), so it must be
small and must never be a reason to fail: :func:`load_state` turns anything it cannot trust
(missing, malformed, another version, non-finite numbers) into ``None``, and the detector then
starts a fresh baseline for that device.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

__all__ = ["STATE_VERSION", "DeviceState", "dump_state", "load_state"]

STATE_VERSION = 1
# Above this many metrics only variances are kept (no covariances), so the state stays well
# under the pipeline's MAX_STATE_CHARS (a full matrix grows with the square of the metrics).
MAX_FULL_COV = 32


@dataclass
class DeviceState:
    """What the detector remembers about one device, as numpy arrays over its metrics.

    Attributes:
        names: Metric names, in the order of every array below.
        t_first: Time (epoch ms) of the first reading of this baseline, for the warm-up.
        t_last: Latest reading time (epoch ms) seen, to detect a stale state.
        bucket: Current time bucket; readings of this bucket are pending (not yet learned).
        folded: Bucket last folded into the baseline; decay runs on the time since then.
        mean: Robust running location per metric.
        w_mean: Time-decayed weight behind ``mean``.
        cov: Running covariance of the (clipped) residuals.
        w_cov: Time-decayed weight behind each entry of ``cov``.
        p_w, p_x, p_s, p_n: Pending sums of the current bucket (weights, weighted values,
            residual cross products, pair weights).
    """

    names: list[str]
    t_first: int
    t_last: int
    bucket: int
    folded: int
    mean: np.ndarray
    w_mean: np.ndarray
    cov: np.ndarray
    w_cov: np.ndarray
    p_w: np.ndarray
    p_x: np.ndarray
    p_s: np.ndarray
    p_n: np.ndarray

    @classmethod
    def fresh(cls, names: Sequence[str], t_ms: int, bucket: int) -> DeviceState:
        """Return an empty baseline for ``names`` starting at ``t_ms``."""
        k = len(names)
        z1, z2 = np.zeros(k), np.zeros((k, k))
        return cls(
            list(names), t_ms, t_ms, bucket, bucket,
            z1.copy(), z1.copy(), z2.copy(), z2.copy(), z1.copy(), z1.copy(), z2.copy(), z2.copy(),
        )  # fmt: skip

    def with_metrics(self, names: Sequence[str]) -> DeviceState:
        """Return the state extended by ``names`` it does not know yet (with no history).

        A new metric in a device's stream (a sensor added) should not throw away what was
        learned about the others, so the arrays grow instead of the baseline restarting.
        """
        new = [n for n in names if n not in set(self.names)]
        if not new:
            return self
        k0, k = len(self.names), len(self.names) + len(new)

        def grow(a: np.ndarray) -> np.ndarray:
            if a.ndim == 1:
                out = np.zeros(k)
                out[:k0] = a
            else:
                out = np.zeros((k, k))
                out[:k0, :k0] = a
            return out

        return DeviceState(
            [*self.names, *new], self.t_first, self.t_last, self.bucket, self.folded,
            grow(self.mean), grow(self.w_mean), grow(self.cov), grow(self.w_cov),
            grow(self.p_w), grow(self.p_x), grow(self.p_s), grow(self.p_n),
        )  # fmt: skip

    def is_finite(self) -> bool:
        """Return whether every number in the state is finite (so it serialises as JSON)."""
        arrays = (self.mean, self.w_mean, self.cov, self.w_cov, self.p_w, self.p_x, self.p_s)
        return all(bool(np.isfinite(a).all()) for a in (*arrays, self.p_n))


_VECTORS = ("mean", "w_mean", "p_w", "p_x")
_MATRICES = ("cov", "w_cov", "p_s", "p_n")
_INTS = ("t_first", "t_last", "bucket", "folded")


@lru_cache(maxsize=64)
def _triu(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Upper-triangle indices for ``k`` metrics, cached: every request packs every state."""
    return np.triu_indices(k)


def _pack(m: np.ndarray) -> list[float]:
    k = m.shape[0]
    if k > MAX_FULL_COV:
        return np.diag(m).tolist()
    return m[_triu(k)].tolist()


def _unpack(values: list[float], k: int) -> np.ndarray:
    out = np.zeros((k, k))
    if k > MAX_FULL_COV:
        out[np.diag_indices(k)] = values
        return out
    iu = _triu(k)
    out[iu] = values
    out[(iu[1], iu[0])] = values
    return out


def dump_state(state: DeviceState) -> dict[str, Any]:
    """Return the JSON form ``{"v": 1, "metrics": [...], ...}``; symmetric matrices as triangles."""
    out: dict[str, Any] = {"v": STATE_VERSION, "metrics": list(state.names)}
    for key in _INTS:
        out[key] = int(getattr(state, key))
    for key in _VECTORS:
        out[key] = getattr(state, key).tolist()
    for key in _MATRICES:
        out[key] = _pack(getattr(state, key))
    return out


def _floats(raw: object, n: int) -> np.ndarray | None:
    if not isinstance(raw, list) or len(raw) != n:
        return None
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in raw):
        return None
    arr = np.asarray(raw, dtype=float)
    return arr if np.isfinite(arr).all() else None


def load_state(raw: object) -> DeviceState | None:
    """Parse a stored state; ``None`` for anything missing, foreign or malformed.

    Returning ``None`` rather than raising is deliberate: a bad state costs a warm-up period,
    an exception would cost every future prediction of the device.
    """
    if not isinstance(raw, Mapping) or raw.get("v") != STATE_VERSION:
        return None
    names = raw.get("metrics")
    if (
        not isinstance(names, list)
        or not all(isinstance(n, str) for n in names)
        or len(set(names)) != len(names)
    ):
        return None
    k = len(names)
    ints: dict[str, int] = {}
    for key in _INTS:
        value = raw.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            return None
        ints[key] = value
    arrays: dict[str, np.ndarray] = {}
    for key in _VECTORS:
        arr = _floats(raw.get(key), k)
        if arr is None:
            return None
        arrays[key] = arr
    n_packed = k if k > MAX_FULL_COV else k * (k + 1) // 2
    for key in _MATRICES:
        arr = _floats(raw.get(key), n_packed)
        if arr is None:
            return None
        arrays[key] = _unpack(arr.tolist(), k)
    weights = [arrays[w] for w in ("w_mean", "w_cov", "p_w", "p_n")]
    if any((w < 0).any() for w in weights) or (np.diag(arrays["cov"]) < 0).any():
        return None
    return DeviceState(list(names), **ints, **arrays)
