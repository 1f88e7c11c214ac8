"""Micro-batching readings into scoring requests, and narrowing down the ones the model refuses.

One request carries many devices (at most `max_rows` readings and `max_bytes` of body), and a
device appears in exactly one request per round. A device with more readings than fit one
request is cut into chunks scored in consecutive rounds, each round starting from the state the
previous one returned: the model is a function of (state, readings), so order matters.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import orjson

from .errors import PermanentError, ValidationError
from .predictions import DeviceResult, parse_device_result
from .readings import Reading, format_timestamp
from .scoring import AdaptiveLimit, RetryPolicy, Scorer, call_with_retry

__all__ = [
    "CONTRACT_VERSION",
    "DeviceChunk",
    "MicroBatcher",
    "Rejection",
    "ScoreOutcome",
    "chunk_device",
    "next_chunk",
    "pack_requests",
]

log = logging.getLogger(__name__)

CONTRACT_VERSION = 2
# Bytes of envelope around each device's columns: {"device_id":..,"state":..,},
_DEVICE_OVERHEAD = 32
_REQUEST_OVERHEAD = 32


def _json(value: object) -> str:
    """Compact JSON, as json.dumps(..., separators=(",", ":")) writes it but ~10x faster.

    orjson writes UTF-8 rather than ASCII escapes, so sizes go through `_size`. Only readings the
    validators passed (finite numbers) and states read back from JSON come here.
    """
    return orjson.dumps(value).decode()


def _size(text: str) -> int:
    """Bytes of `text` in the UTF-8 request body (str.isascii is a flag check in CPython)."""
    return len(text) if text.isascii() else len(text.encode())


def _matrix(readings: Sequence[Reading]) -> tuple[list[str], list[list[float | None]]]:
    """Contract 2's ``metrics`` and ``values`` of a device's readings: names, and a row each.

    The usual device sends the same metrics in the same order every time: its rows are its
    readings' values as they are. Otherwise the names are every metric in order of first
    appearance, and a reading without one has null there.
    """
    metrics = [r.metrics for r in readings]
    if len(set(map(tuple, metrics))) == 1:
        return list(metrics[0]), list(map(list, map(dict.values, metrics)))
    names = list(dict.fromkeys(chain.from_iterable(metrics)))
    return names, [[m.get(name) for name in names] for m in metrics]


def _columns_json(stamps: Sequence[str], readings: Sequence[Reading]) -> str:
    """``"timestamps":[..],"metrics":[..],"values":[[..],..]``: a device's readings, in columns."""
    names, values = _matrix(readings)
    return _json({"timestamps": stamps, "metrics": names, "values": values})[1:-1]


@dataclass(frozen=True, slots=True)
class DeviceChunk:
    """Consecutive readings of one device, pre-encoded as the request's columns."""

    device_id: str
    readings: list[Reading]
    columns_json: str  # `"timestamps":[..],"metrics":[..],"values":[[..],..]`, see `_columns_json`
    stamps: list[str]  # each reading's timestamp as sent, to check the answer against
    size: int  # bytes of `columns_json`


@dataclass(frozen=True, slots=True)
class Rejection:
    """Readings the model refused (or answered wrongly for), with the reason."""

    device_id: str
    readings: list[Reading]
    reason: str


@dataclass(slots=True)
class ScoreOutcome:
    """Everything one `MicroBatcher.score` call produced."""

    results: dict[str, DeviceResult] = field(default_factory=dict)
    rejected: list[Rejection] = field(default_factory=list)
    model_version: str | None = None
    requests: int = 0


def next_chunk(
    device_id: str, readings: Sequence[Reading], start: int, *, max_rows: int, max_bytes: int
) -> DeviceChunk:
    """The longest run from `start` that fits a request with this device alone (at least one)."""
    budget = max_bytes - _REQUEST_OVERHEAD - _DEVICE_OVERHEAD - len(device_id)
    rows = list(readings[start : start + max_rows])
    stamps = [format_timestamp(r.timestamp) for r in rows]
    # Usually the whole run fits: encode it in one call, and cut reading by reading only if not.
    text = _columns_json(stamps, rows)
    if _size(text) <= budget:
        return DeviceChunk(device_id, rows, text, stamps, _size(text))
    # Each reading costs its stamp and its row, commas included, with every name of the run;
    # the first n readings then take at most that (their names can only be fewer).
    names, values = _matrix(rows)
    size = len('"timestamps":[],"metrics":,"values":[]') + _size(_json(names))
    n = 0
    for stamp, row in zip(stamps, values, strict=True):
        size += _size(_json(stamp)) + _size(_json(row)) + 2
        if n and size > budget:
            break
        n += 1
    text = _columns_json(stamps[:n], rows[:n])
    return DeviceChunk(device_id, rows[:n], text, stamps[:n], _size(text))


def chunk_device(
    device_id: str, readings: Sequence[Reading], *, max_rows: int, max_bytes: int
) -> list[DeviceChunk]:
    """Cut one device's readings into chunks that each fit a request on their own."""
    chunks: list[DeviceChunk] = []
    start = 0
    while start < len(readings):
        chunk = next_chunk(device_id, readings, start, max_rows=max_rows, max_bytes=max_bytes)
        chunks.append(chunk)
        start += len(chunk.readings)
    return chunks


def pack_requests(
    chunks: Sequence[DeviceChunk],
    state_sizes: Mapping[str, int],
    *,
    max_rows: int,
    max_bytes: int,
) -> list[list[DeviceChunk]]:
    """Pack chunks into requests in order (next-fit): rows and bytes both bounded."""
    requests: list[list[DeviceChunk]] = []
    current: list[DeviceChunk] = []
    rows = 0
    size = _REQUEST_OVERHEAD
    for chunk in chunks:
        cost = (
            chunk.size
            + _DEVICE_OVERHEAD
            + len(chunk.device_id)
            + state_sizes.get(chunk.device_id, 4)
        )
        if current and (rows + len(chunk.readings) > max_rows or size + cost > max_bytes):
            requests.append(current)
            current, rows, size = [], 0, _REQUEST_OVERHEAD
        current.append(chunk)
        rows += len(chunk.readings)
        size += cost
    if current:
        requests.append(current)
    return requests


def build_body(chunks: Sequence[DeviceChunk], states: Mapping[str, str]) -> bytes:
    """Assemble the scoring request from pre-encoded fragments (no re-encoding of readings)."""
    parts = []
    for chunk in chunks:
        parts.append(
            '{"device_id":'
            + json.dumps(chunk.device_id)
            + ',"state":'
            + states.get(chunk.device_id, "null")
            + ","
            + chunk.columns_json
            + "}"
        )
    return f'{{"contract":{CONTRACT_VERSION},"devices":[{",".join(parts)}]}}'.encode()


class MicroBatcher:
    """Scores many devices' readings through a `Scorer` with bounded, adaptive concurrency."""

    def __init__(
        self,
        scorer: Scorer,
        *,
        max_rows: int = 2000,
        max_bytes: int = 1024 * 1024,
        max_concurrency: int = 4,
        split_rows: int = 500,
        retry_deadline: float = 60.0,
        policy: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.scorer = scorer
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.max_concurrency = max_concurrency
        self.split_rows = split_rows
        self.retry_deadline = retry_deadline
        self.limit = AdaptiveLimit(max_concurrency)
        self.policy = policy or RetryPolicy()
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix="score")

    def close(self) -> None:
        """Stop the worker threads."""
        self._pool.shutdown(wait=True)

    def score(
        self,
        devices: Mapping[str, Sequence[Reading]],
        states: Mapping[str, dict[str, Any] | None],
    ) -> ScoreOutcome:
        """Score every device's readings (each already in time order), starting from `states`.

        Raises:
            TransientError: the endpoint kept failing past the retry deadline; nothing is lost,
                the caller fails the invocation so the batch is delivered again.
            EndpointConfigError: the endpoint refuses every request (settings are wrong).
        """
        deadline = self._clock() + self.retry_deadline
        outcome = ScoreOutcome()
        encoded = {d: _json(s) for d, s in states.items() if s is not None}
        cursors = {d: 0 for d, rs in devices.items() if rs}
        while cursors:
            groups = self._spread(
                {d: min(len(devices[d]) - cursors[d], self.max_rows) for d in cursors}
            )
            starts = dict(cursors)
            futures = [
                self._pool.submit(self._round, group, devices, starts, encoded, deadline)
                for group in groups
            ]
            try:
                parts = [future.result() for future in futures]
            except BaseException:
                for future in futures:  # the batch will come again: stop what has not started
                    future.cancel()
                raise
            for lengths, _ in parts:
                for device_id, n in lengths.items():
                    cursors[device_id] += n
                    if cursors[device_id] >= len(devices[device_id]):
                        del cursors[device_id]
            answers = [answer for _, sent in parts for answer in sent]
            for results, rejected, model_version, count in answers:
                outcome.requests += count
                outcome.rejected.extend(rejected)
                if model_version is not None:
                    outcome.model_version = model_version
                for result in results:
                    if result.device_id in cursors:  # more readings: the next round sends this
                        encoded[result.device_id] = (
                            result.state_json
                            if result.state_json is not None
                            else _json(result.state)
                        )
                    prior = outcome.results.get(result.device_id)
                    if prior is not None:
                        result = DeviceResult(
                            result.device_id,
                            result.state,
                            prior.predictions + result.predictions,
                            result.state_json,
                        )
                    outcome.results[result.device_id] = result
        return outcome

    def _spread(self, rows: Mapping[str, int]) -> list[list[str]]:
        """Cut a round's devices into consecutive groups of about equal rows, one per worker.

        A round of more than `split_rows` rows, or more than one request's `max_rows`, goes
        out as up to `max_concurrency` requests, each cut, encoded and sent on its own worker:
        the endpoint's workers (AML runs several per instance) share it, and this side encodes
        and reads one request while the endpoint scores another. A small round stays one
        request.
        """
        total = sum(rows.values())
        requests = max(-(-total // self.max_rows), total // self.split_rows, 1)
        parts = min(self.max_concurrency, requests)
        groups: list[list[str]] = [[]]
        done = 0
        for device_id, n in rows.items():
            if groups[-1] and done >= total * len(groups) / parts:
                groups.append([])
            groups[-1].append(device_id)
            done += n
        return groups

    def _round(
        self,
        group: Sequence[str],
        devices: Mapping[str, Sequence[Reading]],
        starts: Mapping[str, int],
        states: Mapping[str, str],
        deadline: float,
    ) -> tuple[dict[str, int], list[tuple[list[DeviceResult], list[Rejection], str | None, int]]]:
        """Cut each device's next chunk, pack and send; (rows taken per device, the answers).

        A device's chunk is cut against the state the model last returned, which may have
        grown, so every request stays within max_bytes.
        """
        chunks = [
            next_chunk(
                d,
                devices[d],
                starts[d],
                max_rows=self.max_rows,
                max_bytes=self.max_bytes - _size(states.get(d, "null")),
            )
            for d in group
        ]
        requests = pack_requests(
            chunks,
            {d: _size(states[d]) for d in group if d in states},
            max_rows=self.max_rows,
            max_bytes=self.max_bytes,
        )
        sent = [self._send(request, states, deadline) for request in requests]
        return {c.device_id: len(c.readings) for c in chunks}, sent

    def _send(
        self, chunks: list[DeviceChunk], states: Mapping[str, str], deadline: float
    ) -> tuple[list[DeviceResult], list[Rejection], str | None, int]:
        body = build_body(chunks, states)
        try:
            doc = call_with_retry(
                self.scorer,
                body,
                limit=self.limit,
                policy=self.policy,
                deadline=deadline,
                clock=self._clock,
                sleep=self._sleep,
                rng=self._rng,
            )
            results, rejected, version = _read_response(doc, chunks)
            return results, rejected, version, 1
        except PermanentError as exc:
            if len(chunks) == 1:
                chunk = chunks[0]
                log.warning(
                    "model refused device %s (%d readings): %s",
                    chunk.device_id,
                    len(chunk.readings),
                    exc,
                )
                return (
                    [],
                    [Rejection(chunk.device_id, chunk.readings, f"model refused: {exc}")],
                    None,
                    1,
                )
            half = len(chunks) // 2
            log.info("model refused a request of %d devices; splitting to isolate", len(chunks))
            left = self._send(chunks[:half], states, deadline)
            right = self._send(chunks[half:], states, deadline)
            return (
                left[0] + right[0],
                left[1] + right[1],
                right[2] or left[2],
                1 + left[3] + right[3],
            )


def _read_response(
    doc: Mapping[str, Any], chunks: Sequence[DeviceChunk]
) -> tuple[list[DeviceResult], list[Rejection], str]:
    """Validate a whole response; a device answered wrongly is rejected, not the request."""
    version = doc.get("model_version")
    devices = doc.get("devices")
    if not isinstance(version, str) or not 0 < len(version) <= 128:
        raise PermanentError("response field model_version must be a non-empty string")
    if not isinstance(devices, list):
        raise PermanentError("response field devices must be an array")
    by_id: dict[str, Any] = {}
    for item in devices:
        if isinstance(item, dict) and isinstance(item.get("device_id"), str):
            by_id[item["device_id"]] = item
    results: list[DeviceResult] = []
    rejected: list[Rejection] = []
    for chunk in chunks:
        raw = by_id.get(chunk.device_id)
        if raw is None:
            rejected.append(
                Rejection(chunk.device_id, chunk.readings, "model response has no entry for device")
            )
            continue
        try:
            results.append(parse_device_result(raw, chunk.readings, version, stamps=chunk.stamps))
        except ValidationError as exc:
            log.warning("model answered device %s wrongly: %s", chunk.device_id, exc)
            rejected.append(
                Rejection(chunk.device_id, chunk.readings, f"invalid model response: {exc}")
            )
    return results, rejected, version
