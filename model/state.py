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

__all__ = ["STATE_VERSION", "DeviceState", "dump_state", "dump_states", "load_state", "load_states"]

STATE_VERSION = 3
# Time scales of the trend features (the failure predictor's inputs): short and long.
TREND_SCALES = 2
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
        slow, w_slow: The same location on the covariance's (long) time scale: the reference
            the trend measures against, so a degradation is not absorbed within hours.
        cov: Running covariance of the (clipped) residuals.
        w_cov: Time-decayed weight behind each entry of ``cov``.
        p_w, p_x, p_s, p_n: Pending sums of the current bucket (weights, weighted values,
            residual cross products, pair weights).
        tr_w, tr_s, tr_q: Trend per time scale and metric, shape ``(TREND_SCALES, k)``: the
            decayed count, sum and sum of squares of the metric's conditional residual (what
            is left of it once the other metrics explain what they can).
        tg_w, tg_s: Trend of the overall deviation (the calibrated deviate), per time scale.
        pc_n, pc_s, pc_q, pg_n, pg_s: Pending trend sums of the current bucket.
        last, last_ok: The latest reading's values and which of them were present, so the
            first reading of the next request knows how far the machine just moved.
        step, w_step: Typical change of each metric from one reading to the next (a
            time-decayed mean of the clipped absolute change) and its weight: what "the
            machine moved" is measured against, so a steady machine's noise is not a move.
        p_d, p_dn: Pending sums of the current bucket for ``step`` (clipped changes, count).
        t_move: Time (epoch ms, 0 = never) of the latest reading at which the machine's
            operating point moved (a start, stop or load step): readings soon after it are
            in a transient, where the relations between metrics lag and bend.
    """

    names: list[str]
    t_first: int
    t_last: int
    bucket: int
    folded: int
    mean: np.ndarray
    w_mean: np.ndarray
    slow: np.ndarray
    w_slow: np.ndarray
    cov: np.ndarray
    w_cov: np.ndarray
    p_w: np.ndarray
    p_x: np.ndarray
    p_s: np.ndarray
    p_n: np.ndarray
    tr_w: np.ndarray
    tr_s: np.ndarray
    tr_q: np.ndarray
    tg_w: np.ndarray
    tg_s: np.ndarray
    pc_n: np.ndarray
    pc_s: np.ndarray
    pc_q: np.ndarray
    last: np.ndarray
    last_ok: np.ndarray
    step: np.ndarray
    w_step: np.ndarray
    p_d: np.ndarray
    p_dn: np.ndarray
    pg_n: float = 0.0
    pg_s: float = 0.0
    t_move: float = 0.0

    @classmethod
    def fresh(cls, names: Sequence[str], t_ms: int, bucket: int) -> DeviceState:
        """Return an empty baseline for ``names`` starting at ``t_ms``."""
        k = len(names)
        arrays = {key: np.zeros(_shape(key, k)) for key in _ARRAYS}
        return cls(list(names), t_ms, t_ms, bucket, bucket, **arrays)

    def copy(self) -> DeviceState:
        """Return a deep copy (the detector never modifies the state it was given)."""
        return DeviceState(
            list(self.names), self.t_first, self.t_last, self.bucket, self.folded,
            *(getattr(self, key).copy() for key in _ARRAYS),
            *(getattr(self, key) for key in _SCALARS),
        )  # fmt: skip

    def with_metrics(self, names: Sequence[str]) -> DeviceState:
        """Return the state extended by ``names`` it does not know yet (with no history).

        A new metric in a device's stream (a sensor added) should not throw away what was
        learned about the others, so the arrays grow instead of the baseline restarting.
        """
        if names == self.names:
            return self
        known = set(self.names)
        new = [n for n in names if n not in known]
        if not new:
            return self
        k0, k = len(self.names), len(self.names) + len(new)

        def grow(key: str) -> np.ndarray:
            a = getattr(self, key)
            if key in _MATRICES:
                out = np.zeros((k, k))
                out[:k0, :k0] = a
            elif key in _TRENDS:
                out = np.zeros((TREND_SCALES, k))
                out[:, :k0] = a
            elif key in _GLOBAL:
                return a.copy()
            else:
                out = np.zeros(k)
                out[:k0] = a
            return out

        return DeviceState(
            [*self.names, *new], self.t_first, self.t_last, self.bucket, self.folded,
            *(grow(key) for key in _ARRAYS), *(getattr(self, key) for key in _SCALARS),
        )  # fmt: skip

    def is_finite(self) -> bool:
        """Return whether every number in the state is finite (so it serialises as JSON)."""
        scalars = np.isfinite([getattr(self, key) for key in _SCALARS]).all()
        return bool(scalars) and all(bool(np.isfinite(getattr(self, a)).all()) for a in _ARRAYS)


_VECTORS = (
    *("mean", "w_mean", "slow", "w_slow", "p_w", "p_x", "pc_n", "pc_s", "pc_q"),
    *("last", "last_ok", "step", "w_step", "p_d", "p_dn"),
)
_MATRICES = ("cov", "w_cov", "p_s", "p_n")
_TRENDS = ("tr_w", "tr_s", "tr_q")
_GLOBAL = ("tg_w", "tg_s")
# Constructor order of the array fields (after names and the integers).
_ARRAYS = (
    *("mean", "w_mean", "slow", "w_slow", "cov", "w_cov", "p_w", "p_x", "p_s", "p_n"),
    *(*_TRENDS, *_GLOBAL, "pc_n", "pc_s", "pc_q", "last", "last_ok"),
    *("step", "w_step", "p_d", "p_dn"),
)
_INTS = ("t_first", "t_last", "bucket", "folded")
_NEW_IN_V2 = ("slow", "w_slow", "pc_n", "pc_s", "pc_q")
_NEW_IN_V3 = ("last", "last_ok", "step", "w_step", "p_d", "p_dn", "t_move")


def _shape(key: str, k: int) -> tuple[int, ...]:
    if key in _MATRICES:
        return (k, k)
    if key in _TRENDS:
        return (TREND_SCALES, k)
    if key in _GLOBAL:
        return (TREND_SCALES,)
    return (k,)


_SCALARS = ("pg_n", "pg_s", "t_move")


@lru_cache(maxsize=64)
def _triu(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Upper-triangle indices for ``k`` metrics, cached: every request packs every state."""
    return np.triu_indices(k)


def _unpack(values: np.ndarray, k: int) -> np.ndarray:
    """Symmetric matrices ``(d, k, k)`` from their stored triangles (diagonals) ``(d, n)``."""
    out = np.zeros((values.shape[0], k, k))
    if k > MAX_FULL_COV:
        i = np.arange(k)
        out[:, i, i] = values
        return out
    iu = _triu(k)
    out[:, iu[0], iu[1]] = values
    out[:, iu[1], iu[0]] = values
    return out


def dump_state(state: DeviceState) -> dict[str, Any]:
    """Return the JSON form ``{"v": 2, "metrics": [...], ...}``; symmetric matrices as triangles."""
    return dump_states([state])[0]


def dump_states(states: Sequence[DeviceState]) -> list[dict[str, Any]]:
    """:func:`dump_state` of each state; states with equally many metrics share each step.

    Per group: one stacked array per field, one conversion of everything to Python floats,
    then list slices per device (a state is dumped for every device of every request).
    """
    out: list[dict[str, Any]] = [{} for _ in states]
    groups: dict[int, list[int]] = {}
    for i, state in enumerate(states):
        groups.setdefault(len(state.names), []).append(i)
    for k, members in groups.items():
        group = [states[i] for i in members]
        d = len(group)

        def stacked(key: str, group: list[DeviceState] = group, d: int = d) -> np.ndarray:
            return np.concatenate([getattr(s, key).reshape(-1) for s in group]).reshape(d, -1)

        mats = [stacked(key).reshape(d, k, k) for key in _MATRICES]
        rows = _diag(k) if k > MAX_FULL_COV else _triu(k)
        parts = [
            *(stacked(key) for key in _VECTORS),
            *(m[:, rows[0], rows[1]] for m in mats),
            *(stacked(key) for key in (*_TRENDS, *_GLOBAL)),
            np.array([[getattr(s, key) for key in _SCALARS] for s in group], dtype=float).reshape(
                d, len(_SCALARS)
            ),
        ]
        flat = np.concatenate(parts, axis=1).tolist()
        spans: list[tuple[str, int, int]] = []
        pos = 0
        for key, part in zip((*_VECTORS, *_MATRICES, *_TRENDS, *_GLOBAL), parts, strict=False):
            spans.append((key, pos, pos + part.shape[1]))
            pos += part.shape[1]
        for i, state, values in zip(members, group, flat, strict=True):
            doc: dict[str, Any] = {"v": STATE_VERSION, "metrics": list(state.names)}
            for key in _INTS:
                doc[key] = int(getattr(state, key))
            for key, s, e in spans:
                doc[key] = values[s:e]
            for j, key in enumerate(_SCALARS):
                doc[key] = values[pos + j]
            out[i] = doc
    return out


@lru_cache(maxsize=64)
def _diag(k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.diag_indices(k)


_NUMBER = frozenset((int, float))
# Fields that can never be negative: weights, sums of squares, and the covariance's diagonal.
_NONNEG = (
    *("w_mean", "w_slow", "w_cov", "p_w", "p_n", "tr_w", "tg_w", "pc_n", "tr_q", "pc_q"),
    *("last_ok", "pg_n", "t_move", "step", "w_step", "p_d", "p_dn"),
)


@lru_cache(maxsize=256)
def _layout(k: int, version: int) -> tuple[list[tuple[str, int]], np.ndarray]:
    """Return the stored fields (name, length; -1 for a scalar) and the never-negative numbers.

    Cached: every request loads every device's state, and most devices share a metric count.
    """
    n_packed = k if k > MAX_FULL_COV else k * (k + 1) // 2
    absent = (*(_NEW_IN_V2 if version == 1 else ()), *(_NEW_IN_V3 if version < 3 else ()))
    fields = [(key, k) for key in _VECTORS if key not in absent]
    fields += [(key, n_packed) for key in _MATRICES]
    if version != 1:
        fields += [(key, TREND_SCALES * k) for key in _TRENDS]
        fields += [(key, TREND_SCALES) for key in _GLOBAL]
        fields += [(key, -1) for key in _SCALARS if key not in absent]
    masks = []
    for key, n in fields:
        if key in _NONNEG:
            masks.append(np.ones(1 if n < 0 else n, dtype=bool))
        elif key == "cov":
            iu = _triu(k)
            masks.append(np.ones(n, dtype=bool) if k > MAX_FULL_COV else iu[0] == iu[1])
        else:
            masks.append(np.zeros(1 if n < 0 else n, dtype=bool))
    return fields, np.flatnonzero(np.concatenate([np.zeros(0, dtype=bool), *masks]))


def _header(raw: object) -> tuple[int, list[str], dict[str, int]] | None:
    """Version, metric names and integers of a stored state, or None if any is wrong."""
    if not isinstance(raw, Mapping) or raw.get("v") not in (1, 2, STATE_VERSION):
        return None
    names = raw.get("metrics")
    if (
        not isinstance(names, list)
        or not all(isinstance(n, str) for n in names)
        or len(set(names)) != len(names)
    ):
        return None
    ints: dict[str, int] = {}
    for key in _INTS:
        value = raw.get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            return None
        ints[key] = value
    return raw["v"], names, ints


def _numbers(raw: Mapping[str, Any], fields: list[tuple[str, int]]) -> list[Any] | None:
    """Return the numbers of ``fields`` in order; None unless all are JSON numbers as stored.

    Each field must be a list of its length (a scalar: one number); booleans are not numbers.
    """
    values: list[Any] = []
    for key, n in fields:
        item = raw.get(key)
        if n < 0:  # a scalar
            item = [item]
        elif not isinstance(item, list) or len(item) != n:
            return None
        values += item
    if _NUMBER.issuperset(map(type, values)):
        return values  # the usual case, checked in C
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return values
    return None


def load_state(raw: object) -> DeviceState | None:
    """Parse a stored state; ``None`` for anything missing, foreign or malformed.

    Returning ``None`` rather than raising is deliberate: a bad state costs a warm-up period,
    an exception would cost every future prediction of the device.
    """
    return load_states([raw])[0]


def load_states(raws: Sequence[object]) -> list[DeviceState | None]:
    """:func:`load_state` of each; states with equally many metrics are checked together.

    Per group one array holds every number (one conversion, one finiteness and one sign
    check for all), and the states' arrays are rows of its fields.
    """
    out: list[DeviceState | None] = [None] * len(raws)
    groups: dict[tuple[int, int], list[tuple[int, list[str], dict[str, int], list[Any]]]] = {}
    for i, raw in enumerate(raws):
        head = _header(raw)
        if head is None:
            continue
        version, names, ints = head
        values = _numbers(raw, _layout(len(names), version)[0])  # type: ignore[arg-type]
        if values is not None:
            groups.setdefault((len(names), version), []).append((i, names, ints, values))
    for (k, version), members in groups.items():
        fields, nonneg = _layout(k, version)
        try:
            flat = np.array([m[3] for m in members], dtype=float)
        except OverflowError:
            if len(members) == 1:
                continue  # a number too large for a float: not a state of ours
            for m in members:
                out[m[0]] = load_states([raws[m[0]]])[0]
            continue
        d = len(members)
        flat = flat.reshape(d, -1)
        ok = (np.isfinite(flat).all(axis=1) & ~(flat[:, nonneg] < 0).any(axis=1)).tolist()
        arrays: dict[str, np.ndarray] = {}
        scalars: dict[str, list[float]] = {key: [0.0] * d for key in _SCALARS}
        pos = 0
        for key, n in fields:
            width = 1 if n < 0 else n
            part = flat[:, pos : pos + width]
            pos += width
            if n < 0:
                scalars[key] = part[:, 0].tolist()
            elif key in _TRENDS:
                arrays[key] = part.reshape(d, TREND_SCALES, k)
            elif key in _MATRICES:
                arrays[key] = _unpack(part, k)
            else:
                arrays[key] = part
        # An older state keeps what it learned; what it lacks starts empty (version 1: the
        # trend, whose reference starts at the mean; version 2: the step scale, the last
        # reading and the latest move).
        for key in _ARRAYS:
            if key not in arrays:
                arrays[key] = np.zeros((d, *_shape(key, k)))
        if version == 1:
            arrays["slow"], arrays["w_slow"] = arrays["mean"].copy(), arrays["w_mean"].copy()
        # A move is a reading's time: never after the latest reading.
        ok = [
            good and t_move <= m[2]["t_last"]
            for good, t_move, m in zip(ok, scalars["t_move"], members, strict=True)
        ]
        rows = zip(
            *(list(arrays[key]) for key in _ARRAYS), *(scalars[key] for key in _SCALARS),
            strict=True,
        )  # fmt: skip
        for (i, names, ints, _), good, row in zip(members, ok, rows, strict=True):
            if good:
                out[i] = DeviceState(
                    list(names), ints["t_first"], ints["t_last"], ints["bucket"],
                    ints["folded"], *row,
                )  # fmt: skip
    return out
