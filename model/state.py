"""Per-device detector state: a few numbers per metric, versioned, a JSON object of finite floats.

The state travels with every request (the pipeline stores it between calls), so it must be
small, cheap to read and write, and must never be a reason to fail: :func:`load_state` turns
anything it cannot trust (missing, malformed, another version, non-finite numbers) into
``None``, and the detector then starts a fresh baseline for that device.

Version 4 (what :func:`dump_state` writes) keeps the names and integers as plain JSON and every
float in one base64 string of little-endian float64 bytes, so the numbers round-trip bit for
bit and cost no float formatting or parsing::

    {"v": 4, "metrics": ["rpm", "temp"], "t_first": 1795737600000, "t_last": 1795797480000,
     "bucket": 5985991, "folded": 5985990, "one": 34898, "x": "AAAAAAAA8D8..."}

``x`` holds the numbers of version 3 in their order (see ``_layout``: symmetric matrices as
upper triangles, diagonals above ``MAX_FULL_COV`` metrics). A part (a field of ``_layout``,
or one time scale of a trend) whose entries all have the same bits (a weight shared by every
metric, the usual case) is stored once: bit ``j`` of ``one`` marks the ``j``-th part so. The
warm six-metric pump of ``bench/ratios.py`` takes 1,606 characters of compact JSON instead of
3,651. Versions 1 to 3 (every float a JSON number) still load; :func:`dump_state` writes
version 3 on request.
"""

from __future__ import annotations

import binascii
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from operator import attrgetter, is_
from typing import Any

import numpy as np

__all__ = ["STATE_VERSION", "DeviceState", "dump_state", "dump_states", "load_state", "load_states"]

STATE_VERSION = 4
# Time scales of the trend features (the failure predictor's inputs): short and long.
TREND_SCALES = 2
# Above this many metrics only variances are kept (no covariances), so the state stays well
# under the pipeline's MAX_STATE_CHARS (a full matrix grows with the square of the metrics).
MAX_FULL_COV = 32


class _Rows:
    """Room for what is not a field of :class:`DeviceState`: where its arrays came from.

    ``_rows``, set by :func:`load_states` and the detector, whose states' arrays are rows of
    arrays stacked over many states: (those stacks, the row, the state's arrays as made), so
    :func:`_stack_arrays` can take the rows again instead of stacking array after array. A
    slot, not an attribute: ``vars(state)``, equality and ``repr`` see the fields alone.
    """

    __slots__ = ("_rows",)


@dataclass
class DeviceState(_Rows):
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

    def __getstate__(self) -> dict[str, Any]:
        """The fields alone: a copy (or a pickle) does not carry ``_rows`` along."""
        return dict(self.__dict__)

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


def dump_state(state: DeviceState, *, version: int = STATE_VERSION) -> dict[str, Any]:
    """Return the JSON form ``{"v": 4, "metrics": [...], ..., "one": ..., "x": "<base64>"}``.

    Args:
        state: The state to store.
        version: ``STATE_VERSION``, or 3 for every number a JSON number (what a model before
            state version 4 reads; the tests build older states from it).
    """
    return dump_states([state], version=version)[0]


def dump_states(
    states: Sequence[DeviceState], *, version: int = STATE_VERSION
) -> list[dict[str, Any]]:
    """:func:`dump_state` of each state; states with equally many metrics share each step.

    Per group: one stacked array holds every stored number (in ``_layout`` order); then per
    device one base64 encoding of its row's bytes (version 4), or list slices of one
    conversion of the group to Python floats (version 3).
    """
    if version not in (3, STATE_VERSION):
        raise ValueError(f"version: can write 3 or {STATE_VERSION}, not {version!r}")
    out: list[dict[str, Any]] = [{} for _ in states]
    groups: dict[int, list[int]] = {}
    for i, state in enumerate(states):
        groups.setdefault(len(state.names), []).append(i)
    for k, members in groups.items():
        group = [states[i] for i in members]
        d = len(group)
        columns, size = _stored(k)
        # The stored numbers picked out of each state's arrays laid end to end: matrices as
        # their upper triangles.
        every = np.concatenate([a.reshape(d, -1) for a in _stack_arrays(group)], axis=1)
        if every.shape[1] != size:
            raise ValueError(f"states with {k} metrics: arrays of {every.shape[1]} numbers")
        scalars = np.array(list(map(_SCALAR_FIELDS, group)), dtype=float).reshape(d, -1)
        flat = np.concatenate([every[:, columns].astype(np.float64, copy=False), scalars], axis=1)
        docs = [
            {
                "v": version,
                "metrics": list(s.names),
                "t_first": int(s.t_first),
                "t_last": int(s.t_last),
                "bucket": int(s.bucket),
                "folded": int(s.folded),
            }
            for s in group
        ]
        if version == 3:
            _dump_numbers(k, flat, docs)
        else:
            _dump_packed(k, flat, docs)
        for i, doc in zip(members, docs, strict=True):
            out[i] = doc
    return out


_ARRAY_FIELDS = attrgetter(*_ARRAYS)
_SCALAR_FIELDS = attrgetter(*_SCALARS)


def _stack_arrays(states: Sequence[DeviceState]) -> list[np.ndarray]:
    """The array fields (``_ARRAYS`` order) of states (at least one) with equally many metrics.

    Each a new array with a leading device axis; the states stay as they are. States that
    :func:`load_states` or the detector made hold rows of such stacks already: when every
    state still holds its row of one set of stacks (its arrays are the very ones it was made
    with, so none was replaced), a field is one ``take`` of those rows; otherwise one
    concatenation of as many arrays as states (per field, a C call over the states either way,
    but the ``take`` costs nothing per state).
    """
    d = len(states)
    tags = [getattr(state, "_rows", None) for state in states]
    first = tags[0]
    if first is not None:
        stacks = first[0]
        rows: list[int] = []
        for state, tag in zip(states, tags, strict=True):
            if (
                tag is None
                or tag[0] is not stacks
                or not all(map(is_, _ARRAY_FIELDS(state), tag[2]))
            ):
                break
            rows.append(tag[1])
        else:
            if rows == list(range(stacks[0].shape[0])):
                return [a.copy() for a in stacks]
            index = np.array(rows, dtype=np.intp)
            return [a[index] for a in stacks]
    return [
        np.concatenate(column).reshape(d, *column[0].shape)
        for column in zip(*map(_ARRAY_FIELDS, states), strict=True)
    ]


def _tag_rows(state: DeviceState, stacks: tuple[np.ndarray, ...], row: int) -> DeviceState:
    """Record that ``state``'s arrays are row ``row`` of ``stacks`` (``_ARRAYS`` order)."""
    state._rows = (stacks, row, _ARRAY_FIELDS(state))
    return state


@lru_cache(maxsize=64)
def _stored(k: int) -> tuple[np.ndarray, int]:
    """Where each stored array number is among a state's arrays laid end to end; their size.

    The arrays in ``_ARRAYS`` order, each flattened; the stored numbers in ``_layout`` order
    (without its scalars), symmetric matrices as their upper triangles (diagonals above
    ``MAX_FULL_COV`` metrics).
    """
    start: dict[str, int] = {}
    size = 0
    for key in _ARRAYS:
        start[key] = size
        size += math.prod(_shape(key, k))
    rows = _diag(k) if k > MAX_FULL_COV else _triu(k)
    columns = [
        *(start[key] + np.arange(k) for key in _VECTORS),
        *(start[key] + rows[0] * k + rows[1] for key in _MATRICES),
        *(start[key] + np.arange(math.prod(_shape(key, k))) for key in (*_TRENDS, *_GLOBAL)),
    ]
    return np.concatenate([np.zeros(0, dtype=np.intp), *columns]).astype(np.intp), size


def _dump_numbers(k: int, flat: np.ndarray, docs: list[dict[str, Any]]) -> None:
    """Version 3: each field a list of JSON numbers, each scalar a number."""
    spans: list[tuple[str, int, int]] = []  # (field, start, end); end -1 for a scalar
    pos = 0
    for key, n in _layout(k, 3)[0]:
        width = 1 if n < 0 else n
        spans.append((key, pos, -1 if n < 0 else pos + width))
        pos += width
    for doc, values in zip(docs, flat.tolist(), strict=True):
        for key, s, e in spans:
            doc[key] = values[s] if e < 0 else values[s:e]


def _dump_packed(k: int, flat: np.ndarray, docs: list[dict[str, Any]]) -> None:
    """Version 4: ``one`` and ``x`` of each row of ``flat``; rows sharing ``one`` pack together.

    A part is stored once when all its entries have the bits of its first (bits, not values:
    -0.0 and 0.0 are equal numbers, and the round trip must be exact).
    """
    d = flat.shape[0]
    starts, widths, multi = _packing(k)
    bits = np.ascontiguousarray(flat, dtype=np.float64).view(np.int64)
    differs = bits != np.repeat(bits[:, starts], widths, axis=1)
    counts = np.zeros((d, bits.shape[1] + 1), dtype=np.int64)
    np.cumsum(differs, axis=1, out=counts[:, 1:])
    same = (counts[:, starts + widths] == counts[:, starts])[:, multi]
    weights = np.left_shift(1, np.flatnonzero(multi)).astype(np.int64)
    masks = (same.astype(np.int64) @ weights).tolist()
    by_mask: dict[int, list[int]] = {}
    for i, mask in enumerate(masks):
        by_mask.setdefault(mask, []).append(i)
    for mask, rows in by_mask.items():
        cols = _kept(k, mask)
        blob = memoryview(np.ascontiguousarray(flat[np.ix_(rows, cols)], dtype="<f8").tobytes())
        step = 8 * len(cols)
        for n, i in enumerate(rows):
            docs[i]["one"] = mask
            docs[i]["x"] = binascii.b2a_base64(
                blob[n * step : (n + 1) * step], newline=False
            ).decode("ascii")


@lru_cache(maxsize=64)
def _packing(k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start and width of each part of the version-4 layout, and which may be stored once.

    A part is a field, except that a trend is one part per time scale (its weights differ
    between the scales but not between metrics).
    """
    widths = np.array(
        [
            w
            for key, n in _layout(k, STATE_VERSION)[0]
            for w in ([k] * TREND_SCALES if key in _TRENDS else [1 if n < 0 else n])
        ],
        dtype=np.int64,
    )
    starts = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int64)
    return starts, widths, widths >= 2


@lru_cache(maxsize=256)
def _kept(k: int, mask: int) -> np.ndarray:
    """Columns of the full layout that version 4 stores for ``mask`` (a part's first alone)."""
    starts, widths, _ = _packing(k)
    return np.concatenate(
        [
            np.arange(a, a + (1 if mask >> j & 1 else w), dtype=np.intp)
            for j, (a, w) in enumerate(zip(starts.tolist(), widths.tolist(), strict=True))
        ]
    )


@lru_cache(maxsize=256)
def _spread(k: int, mask: int) -> np.ndarray:
    """For each column of the full layout, its column in the version-4 ``x`` of ``mask``."""
    widths = _packing(k)[1]
    out: list[int] = []
    pos = 0
    for j, w in enumerate(widths.tolist()):
        if mask >> j & 1:
            out += [pos] * w
            pos += 1
        else:
            out += range(pos, pos + w)
            pos += w
    return np.array(out, dtype=np.intp)


@lru_cache(maxsize=64)
def _diag(k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.diag_indices(k)


_NUMBER = frozenset((int, float))
_INT = frozenset((int,))
_STR = frozenset((str,))
_VERSIONS = (1, 2, 3, STATE_VERSION)
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


def _header(raw: object) -> tuple[int, list[str], list[int]] | None:
    """Version, metric names and integers (``_INTS`` order) of a stored state, or None.

    The usual state's types are checked in C (exact ``str`` and ``int``); only a state that
    fails that is looked at item by item (subclasses pass; booleans are not integers).
    """
    if type(raw) is not dict and not isinstance(raw, Mapping):
        return None
    version = raw.get("v")
    if type(version) is not int or version not in _VERSIONS:
        return None
    names = raw.get("metrics")
    if (
        not isinstance(names, list)
        or not (_STR.issuperset(map(type, names)) or all(isinstance(n, str) for n in names))
        or len(set(names)) != len(names)
    ):
        return None
    ints = list(map(raw.get, _INTS))
    if not _INT.issuperset(map(type, ints)) and any(
        isinstance(v, bool) or not isinstance(v, int) for v in ints
    ):
        return None
    return version, names, ints


def _packed(raw: Mapping[str, Any], k: int) -> tuple[int, bytes] | None:
    """``one`` and the bytes of ``x`` of a version-4 state; None unless both fit ``k`` metrics.

    ``x`` must be strict base64 (no stray characters, padding in place) of exactly the
    stored fields' float64s.
    """
    mask, text = raw.get("one"), raw.get("x")
    if type(mask) is not int or mask < 0 or mask & ~_storable(k) or type(text) is not str:
        return None
    try:
        blob = binascii.a2b_base64(text, strict_mode=True)  # base64.b64decode(validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(blob) != 8 * len(_kept(k, mask)):
        return None
    return mask, blob


@lru_cache(maxsize=64)
def _storable(k: int) -> int:
    """The bits ``one`` may set for ``k`` metrics: parts of two or more entries."""
    return sum(1 << j for j in np.flatnonzero(_packing(k)[2]).tolist())


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
    check for all), and the states' arrays are rows of its fields. Version-4 states that
    share ``one`` are one buffer of their bytes, spread to the full layout in one step.
    """
    out: list[DeviceState | None] = [None] * len(raws)
    groups: dict[tuple[int, int, int], list[tuple[int, list[str], list[int], Any]]] = {}
    for i, raw in enumerate(raws):
        head = _header(raw)
        if head is None:
            continue
        version, names, ints = head
        k = len(names)
        if version == STATE_VERSION:
            packed = _packed(raw, k)  # type: ignore[arg-type]
            if packed is not None:
                groups.setdefault((k, version, packed[0]), []).append((i, names, ints, packed[1]))
            continue
        values = _numbers(raw, _layout(k, version)[0])  # type: ignore[arg-type]
        if values is not None:
            groups.setdefault((k, version, 0), []).append((i, names, ints, values))
    for (k, version, mask), members in groups.items():
        fields, nonneg = _layout(k, version)
        d = len(members)
        if version == STATE_VERSION:
            stored = np.frombuffer(b"".join(m[3] for m in members), dtype="<f8")
            flat = stored.reshape(d, -1)[:, _spread(k, mask)].astype(np.float64, copy=False)
        else:
            try:
                flat = np.array([m[3] for m in members], dtype=float)
            except OverflowError:
                if len(members) == 1:
                    continue  # a number too large for a float: not a state of ours
                for m in members:
                    out[m[0]] = load_states([raws[m[0]]])[0]
                continue
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
            good and t_move <= m[2][1]  # t_last
            for good, t_move, m in zip(ok, scalars["t_move"], members, strict=True)
        ]
        rows = zip(
            *(list(arrays[key]) for key in _ARRAYS), *(scalars[key] for key in _SCALARS),
            strict=True,
        )  # fmt: skip
        stacks = tuple(arrays[key] for key in _ARRAYS)
        for j, ((i, names, ints, _), good, row) in enumerate(zip(members, ok, rows, strict=True)):
            if good:
                out[i] = _tag_rows(DeviceState(list(names), *ints, *row), stacks, j)
    return out
