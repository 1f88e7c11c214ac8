"""Scoring requests, parsed: each device's metric names, times and values as arrays.

Both contracts ``model/score.py`` serves come here (see its docstring for their shapes) and
leave as the same :data:`Parsed` tuples, so scoring never knows which one a request was in.
The usual request takes a fast path over all its devices at once (:func:`_uniform_request`,
:func:`_columnar_request`): its types are checked a column at a time in C, and its values
become one array and its times another. Anything else goes device by device, and the first
malformed field is named in a :class:`RequestError`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from itertools import accumulate, chain, repeat
from typing import Any

import numpy as np

__all__ = ["Parsed", "RequestError", "parse_devices"]


class RequestError(ValueError):
    """A request that can never be scored; ``field`` is its path, e.g. ``devices[0].readings``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _epoch_ms(value: object, where: str) -> int:
    if not isinstance(value, str) or len(value) > 40 or "T" not in value.upper():
        raise RequestError(where, "must be an ISO 8601 date-time string with a UTC offset")
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise RequestError(where, f"not an ISO 8601 date-time: {value[:40]!r}") from None
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise RequestError(where, "needs a UTC offset such as Z or +00:00")
    return math.floor(ts.timestamp() * 1000)


# The common shape of a timestamp: minute, seconds, optional fraction (at most microseconds),
# offset. Readings of a request share their minute and offset, so those are parsed once.
_STAMP = re.compile(
    r"(\d{4}-\d\d-\d\dT\d\d:\d\d):(\d\d)(?:\.(\d{1,6}))?(Z|[+-]\d\d:\d\d)", re.ASCII
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - _EPOCH
_minutes: dict[tuple[str, str], int | None] = {}


def _minute_us(minute: str, offset: str) -> int | None:
    """Microseconds from the epoch to ``minute`` at ``offset``; None if it is not a time."""
    key = (minute, offset)
    us = _minutes.get(key, -1)
    if us == -1:
        try:
            us = (datetime.fromisoformat(f"{minute}:00{offset}") - _EPOCH) // _US
        except ValueError:
            us = None
        if len(_minutes) > 100_000:
            _minutes.clear()
        _minutes[key] = us
    return us


def _parse_ms(value: object, where: str, cache: dict[str, int]) -> int:
    """:func:`_epoch_ms`, exactly, but fast for the usual shape and for repeated strings.

    The result is what ``datetime.timestamp()`` gives: microseconds over 10**6 as a float, then
    times 1000, floored (so the same float rounding as the general path).
    """
    if type(value) is str:
        ms = cache.get(value)
        if ms is not None:
            return ms
        m = _STAMP.fullmatch(value)
        if m is not None:
            minute, sec, frac, offset = m.groups()
            base = _minute_us(minute, offset)
            if base is not None and sec < "60":
                us = base + int(sec) * 1_000_000 + (int(frac.ljust(6, "0")) if frac else 0)
                ms = math.floor(us / 1_000_000 * 1000)
                cache[value] = ms
                return ms
    return _epoch_ms(value, where)


_NUMBER = frozenset((int, float))


def _check_value(value: object, where: str) -> None:
    """Raise unless ``value`` is a metric's value: a number (not a bool) or null."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise RequestError(where, "must be a number or null")


def _check_metrics(metrics: Mapping[Any, Any], at: str) -> bool:
    """Raise for the first value that is neither a number nor null; whether any is null."""
    for name, value in metrics.items():
        _check_value(value, f"{at}.metrics.{name}")
    return None in metrics.values()


def _device_id(device: object, where: str) -> str:
    """The id of a device of either contract; raise unless it is an object with one."""
    if not isinstance(device, Mapping):
        raise RequestError(where, "must be an object")
    device_id = device.get("device_id")
    if not isinstance(device_id, str) or not device_id:
        raise RequestError(f"{where}.device_id", "must be a non-empty string")
    return device_id


_DICT = frozenset((dict,))
_STR = frozenset((str,))
_LIST = frozenset((list,))


# A device as scoring takes it: id, metric names, times (ms), values (NaN = missing), and the
# timestamps as sent (echoed in the answer).
Parsed = tuple[str, list[str], np.ndarray, np.ndarray, list[Any]]


def _uniform_request(devices: list[Any], cache: dict[str, int]) -> list[Parsed] | None:
    """Every device's :func:`_device_arrays`, in one pass over all readings of the request.

    For the usual contract-1 request: every device an object with a non-empty string id and a
    list of readings, each device's readings of the shape :func:`_uniform_arrays` takes (see
    :func:`_split`). None for anything else (the per-device path then finds the first
    problem, in request order, and names it).
    """
    if not _DICT.issuperset(map(type, devices)):
        return None
    ids = [device.get("device_id") for device in devices]
    per_device = [device.get("readings") for device in devices]
    if (
        not _STR.issuperset(map(type, ids))
        or "" in ids
        or not _LIST.issuperset(map(type, per_device))
    ):
        return None
    columns = _columns(list(chain.from_iterable(per_device)))
    if columns is None:
        return None
    stamps, metrics = columns
    keys = list(map(tuple, metrics))
    lens = list(map(len, per_device))
    ends = list(accumulate(lens))
    if len(set(keys)) != 1:
        # Devices of different kinds: each device's readings must still share one key tuple.
        for e, n in zip(ends, lens, strict=True):
            if n and keys[e - n : e].count(keys[e - n]) != n:
                return None
    values = list(chain.from_iterable(map(dict.values, metrics)))
    if not _NUMBER.issuperset(map(type, values)):
        return None
    times = _times(stamps, cache)
    if times is None:
        return None
    names = [list(keys[e - 1]) if n else [] for e, n in zip(ends, lens, strict=True)]
    per_stamps = [stamps[e - n : e] for e, n in zip(ends, lens, strict=True)]
    t_all = np.array(times, dtype=np.int64)
    x_all = np.array(values, dtype=float)
    return _split(ids, names, lens, per_stamps, t_all, x_all)


def _split(
    ids: list[str],
    names: list[list[str]],
    lens: list[int],
    stamps: list[list[Any]],
    t_all: np.ndarray,
    x_all: np.ndarray,
) -> list[Parsed]:
    """Every device's :func:`_device_arrays`, from the request's readings taken together.

    ``t_all`` holds all readings' times, device after device, and ``x_all`` their values, row
    after row: each device gets views of its ``lens`` rows of ``names`` columns. Two numpy
    conversions per request instead of two per device.
    """
    if len(set(lens)) == 1 and len(set(map(len, names))) == 1 and lens[0]:
        # The usual request: every device as many readings of as many metrics, in one call.
        shape = (len(ids), lens[0], len(names[0]))
        t, x = t_all.reshape(shape[:2]), x_all.reshape(shape)
        return list(zip(ids, names, t, x, stamps, strict=True))
    out: list[Parsed] = []
    s = v = 0
    for device_id, device_names, n, device_stamps in zip(ids, names, lens, stamps, strict=True):
        if not n:
            out.append((device_id, [], np.zeros(0, dtype=np.int64), np.zeros((0, 0)), []))
            continue
        k = len(device_names)
        x = x_all[v : v + n * k].reshape(n, k)
        out.append((device_id, device_names, t_all[s : s + n], x, device_stamps))
        s += n
        v += n * k
    return out


def _columns(readings: list[Any]) -> tuple[list[str], list[dict[str, Any]]] | None:
    """Each reading's timestamp and metrics; None unless each is a string and an object."""
    if not _DICT.issuperset(map(type, readings)):
        return None
    stamps = [r.get("timestamp") for r in readings]
    metrics = [r.get("metrics") for r in readings]
    if not _STR.issuperset(map(type, stamps)) or not _DICT.issuperset(map(type, metrics)):
        return None
    return stamps, metrics


def _times(stamps: list[str], cache: dict[str, int]) -> list[int] | None:
    """Epoch milliseconds of each stamp; None if one is not of the usual shape.

    Each distinct stamp is parsed once: a fleet's devices often share their reading times.
    """
    new = set(stamps).difference(cache)
    if new:
        try:
            cache.update({s: _parse_ms(s, "", cache) for s in new})
        except RequestError:
            return None
    return list(map(cache.__getitem__, stamps))


def _uniform_arrays(
    readings: list[Any], cache: dict[str, int]
) -> tuple[list[str], np.ndarray, np.ndarray, list[Any]] | None:
    """:func:`_device_arrays` for the usual device, a pass per field instead of per reading.

    Every reading an object with a string timestamp of the usual shape and the same metrics
    in the same order, all numbers. None for anything else (the general path then finds the
    first problem, in reading order, and names it).
    """
    columns = _columns(readings) if readings else None
    if columns is None:
        return None
    stamps, metrics = columns
    keys = set(map(tuple, metrics))
    if len(keys) != 1:
        return None
    values = list(map(list, map(dict.values, metrics)))
    if not _NUMBER.issuperset(map(type, chain.from_iterable(values))):
        return None
    times = _times(stamps, cache)
    if times is None:
        return None
    names = list(keys.pop())
    x = np.array(values, dtype=float).reshape(len(values), len(names))
    return names, np.asarray(times, dtype=np.int64), x, stamps


def _device_arrays(
    readings: object, where: str, cache: dict[str, int] | None = None
) -> tuple[list[str], np.ndarray, np.ndarray, list[Any]]:
    """Turn one device's readings into metric names, times (ms) and values (NaN = missing).

    Names are in order of first (non-null) appearance. The usual device sends the same metrics
    in the same order in every reading, all numbers: its values go into one array at once.
    """
    if not isinstance(readings, list):
        raise RequestError(where, "must be an array")
    cache = {} if cache is None else cache
    fast = _uniform_arrays(readings, cache)
    if fast is not None:
        return fast
    times: list[int] = []
    stamps: list[Any] = []
    values: list[list[Any]] = []
    keys: tuple[Any, ...] | None = None
    uniform = True
    for i, reading in enumerate(readings):
        if type(reading) is not dict and not isinstance(reading, Mapping):
            raise RequestError(f"{where}[{i}]", "must be an object")
        stamp = reading.get("timestamp")
        ms = cache.get(stamp) if type(stamp) is str else None
        times.append(_parse_ms(stamp, f"{where}[{i}].timestamp", cache) if ms is None else ms)
        stamps.append(stamp)
        metrics = reading.get("metrics")
        if type(metrics) is not dict and not isinstance(metrics, Mapping):
            raise RequestError(f"{where}[{i}].metrics", "must be an object")
        row = list(metrics.values())
        if not _NUMBER.issuperset(map(type, row)):
            uniform = not _check_metrics(metrics, f"{where}[{i}]") and uniform
        if uniform:
            if keys is None:
                keys = tuple(metrics)
            elif len(row) != len(keys) or tuple(metrics) != keys:
                uniform = False
            values.append(row)
    t = np.asarray(times, dtype=np.int64)
    if uniform:
        names = list(keys or ())
        x = np.array(values, dtype=float).reshape(len(values), len(names))
        return names, t, x, stamps
    index: dict[str, int] = {}
    rows: list[dict[int, float]] = []
    for reading in readings:
        rows.append(
            {
                index.setdefault(name, len(index)): float(value)
                for name, value in reading["metrics"].items()
                if value is not None  # a missing metric: scored on the others
            }
        )
    x = np.full((len(rows), len(index)), np.nan)
    for i, cells in enumerate(rows):
        if cells:
            x[i, list(cells)] = list(cells.values())
    return list(index), t, x, stamps


_CELL = frozenset((int, float, type(None)))


def _distinct(names: tuple[str, ...]) -> bool:
    """Whether strings ``names`` can be a contract-2 device's ``metrics``: distinct, non-empty."""
    return "" not in names and len(set(names)) == len(names)


def _columnar_request(devices: list[Any], cache: dict[str, int]) -> list[Parsed] | None:
    """Every device of a contract-2 request as scoring takes it, a pass per field of all devices.

    For the usual request: every device an object with a non-empty string id, its
    ``timestamps``, ``metrics`` and ``values`` lists of the right types and lengths, every
    stamp a string of the usual shape (:func:`_times`), every value a number or null. None for
    anything else: :func:`_columnar_device` then finds the first problem and names it.
    """
    if not _DICT.issuperset(map(type, devices)):
        return None
    ids = [device.get("device_id") for device in devices]
    stamps = [device.get("timestamps") for device in devices]
    names = [device.get("metrics") for device in devices]
    rows = [device.get("values") for device in devices]
    if (
        not _STR.issuperset(map(type, ids))
        or "" in ids
        or not _LIST.issuperset(map(type, stamps))
        or not _LIST.issuperset(map(type, names))
        or not _LIST.issuperset(map(type, rows))
        or not _STR.issuperset(map(type, chain.from_iterable(names)))
    ):
        return None
    lens = list(map(len, stamps))
    widths = list(map(len, names))
    if (
        lens != list(map(len, rows))
        or not all(map(_distinct, set(map(tuple, names))))
        or (0 in widths and any(n and not k for n, k in zip(lens, widths, strict=True)))
    ):
        return None
    all_rows = list(chain.from_iterable(rows))
    if not _LIST.issuperset(map(type, all_rows)):
        return None
    if len(set(widths)) == 1:  # devices of one kind, the usual request
        if not {widths[0]}.issuperset(map(len, all_rows)):
            return None
    elif list(map(len, all_rows)) != list(chain.from_iterable(map(repeat, widths, lens))):
        return None
    cells = list(chain.from_iterable(all_rows))
    all_stamps = list(chain.from_iterable(stamps))
    if not _CELL.issuperset(map(type, cells)) or not _STR.issuperset(map(type, all_stamps)):
        return None
    times = _times(all_stamps, cache)
    if times is None:
        return None
    return _columnar_arrays(ids, names, lens, stamps, times, cells)


def _columnar_arrays(
    ids: list[str],
    names: list[list[str]],
    lens: list[int],
    stamps: list[list[str]],
    times: list[int],
    cells: list[float | None],
) -> list[Parsed]:
    """Contract-2 devices, checked, as :func:`_split` makes them.

    A device with nulls is scored as contract 1 scores its readings with those metrics left
    out: its metrics in order of their first value (a column without one is left out).
    """
    x_all = np.array(cells, dtype=float)  # None becomes NaN
    parsed = _split(ids, names, lens, stamps, np.array(times, dtype=np.int64), x_all)
    return list(map(_present, parsed)) if np.isnan(x_all).any() else parsed


def _present(device: Parsed) -> Parsed:
    """``device`` with the metrics contract 1's readings would name, in the order it would.

    Contract 1 names a device's metrics in order of first non-null value, reading after
    reading: the columns with a value, by their first row with one, then by position.
    """
    device_id, names, t, x, stamps = device
    seen = ~np.isnan(x)
    if seen.all():
        return device
    cols = np.flatnonzero(seen.any(axis=0))
    order = cols[np.lexsort((cols, seen.argmax(axis=0)[cols]))]
    return device_id, [names[c] for c in order.tolist()], t, x[:, order], stamps


def _columnar_device(
    device: Any, where: str, cache: dict[str, int]
) -> tuple[str, list[str], list[str], list[int], list[list[float | None]]]:
    """One contract-2 device, checked field by field: id, metrics, stamps, times, rows.

    Raises:
        RequestError: naming the device's first malformed field.
    """
    device_id = _device_id(device, where)
    stamps = device.get("timestamps")
    if not isinstance(stamps, list):
        raise RequestError(f"{where}.timestamps", "must be an array")
    names = device.get("metrics")
    if not isinstance(names, list):
        raise RequestError(f"{where}.metrics", "must be an array")
    for j, name in enumerate(names):
        if not isinstance(name, str) or not name:
            raise RequestError(f"{where}.metrics[{j}]", "must be a non-empty string")
    if len(set(names)) != len(names):
        twice = next(name for j, name in enumerate(names) if name in names[:j])
        raise RequestError(f"{where}.metrics", f"names must be distinct: {twice[:40]!r} repeats")
    rows = device.get("values")
    if not isinstance(rows, list):
        raise RequestError(f"{where}.values", "must be an array")
    if len(stamps) != len(rows):
        raise RequestError(
            f"{where}.timestamps",
            f"has {len(stamps)} entries but values has {len(rows)}: one each per reading",
        )
    if rows and not names:
        raise RequestError(f"{where}.metrics", "must name at least one metric")
    k = len(names)
    times: list[int] = []
    clean: list[list[float | None]] = []
    for i, (stamp, row) in enumerate(zip(stamps, rows, strict=True)):
        times.append(_parse_ms(stamp, f"{where}.timestamps[{i}]", cache))
        if not isinstance(row, list) or len(row) != k:
            raise RequestError(f"{where}.values[{i}]", f"must be an array of {k} numbers or nulls")
        for j, value in enumerate(row):
            _check_value(value, f"{where}.values[{i}][{j}]")
        clean.append([None if value is None else float(value) for value in row])
    return str(device_id), list(map(str, names)), list(map(str, stamps)), times, clean


def _columnar_devices(devices: list[Any], cache: dict[str, int]) -> list[Parsed]:
    """:func:`_columnar_request` for any request: device by device, naming the first problem."""
    checked = [_columnar_device(device, f"devices[{d}]", cache) for d, device in enumerate(devices)]
    return _columnar_arrays(
        [c[0] for c in checked],
        [c[1] for c in checked],
        [len(c[2]) for c in checked],
        [c[2] for c in checked],
        [ms for c in checked for ms in c[3]],
        [value for *_, rows in checked for row in rows for value in row],
    )


def _readings_devices(devices: list[Any], cache: dict[str, int]) -> list[Parsed]:
    """:func:`_uniform_request` for any contract-1 request: device by device, naming a problem."""
    parsed: list[Parsed] = []
    for d, device in enumerate(devices):
        where = f"devices[{d}]"
        device_id = _device_id(device, where)
        names, t_ms, x, stamps = _device_arrays(device.get("readings"), f"{where}.readings", cache)
        parsed.append((device_id, names, t_ms, x, stamps))
    return parsed


def parse_devices(contract: int, devices: list[Any]) -> list[Parsed]:
    """Every device of a request in ``contract``'s shape (1 or 2), as scoring takes it.

    Raises:
        RequestError: naming the first malformed field.
    """
    cache: dict[str, int] = {}  # each distinct timestamp is parsed once per request
    if contract == 1:
        parsed = _uniform_request(devices, cache)
        return _readings_devices(devices, cache) if parsed is None else parsed
    parsed = _columnar_request(devices, cache)
    return _columnar_devices(devices, cache) if parsed is None else parsed
