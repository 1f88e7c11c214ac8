"""The HTTP sender: batched, rate-limited, retried POSTs to the ingest endpoint, counted honestly.

Readings go out as `{"readings": [...]}` bodies of at most `batch_size` readings and 1 MiB (the
ingest limits), over at most `max_connections` concurrent connections (one worker thread, one
pooled `requests.Session` each). Transient answers (429/503 with `Retry-After`, 502/504,
connection errors, timeouts) are retried with exponential backoff and full jitter; a 400 is a
rejection and is never retried; 401/403/404/413/415 mean the configuration is wrong, so the
client stops sending and reports it. `cancel()` stops it too (Ctrl-C, a deadline) without
blaming the configuration.

Accounting is keyed by reading identity `(device_id, timestamp)`: the ingest is idempotent by
identity, so a batch whose 202 was lost on the way back is resent and its readings still count
once. The accepted identities become a manifest (per device: count, first and last timestamp)
that tests compare with what the server stored.

Example:
    >>> with IngestClient("http://127.0.0.1:7071/api/readings", "key") as c:  # doctest: +SKIP
    ...     c.submit(readings)  # sends full batches, keeps a partial one for a while
    ...     c.flush()  # sends the rest and waits for every answer
    ...     print(c.stats().accepted)
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

__all__ = [
    "FATAL_STATUSES",
    "MAX_BODY_BYTES",
    "MAX_READINGS",
    "RETRY_STATUSES",
    "ClientStats",
    "IngestClient",
    "corrupt_reading",
]

MAX_BODY_BYTES = 1024 * 1024  # the ingest contract: 413 above 1 MiB ...
MAX_READINGS = 5000  # ... or 5,000 readings per request
RETRY_STATUSES = frozenset({408, 429, 502, 503, 504})
FATAL_STATUSES = frozenset({401, 403, 404, 413, 415})
_MAX_RETRY_AFTER_S = 300.0  # a Retry-After beyond this is treated as a misconfigured server
_CORRUPTIONS = ("non_numeric", "nan_string", "missing_device_id", "bad_timestamp", "upper_metric")
_FATAL_HINTS = {
    401: "the function key was refused: check --key / FLEETSCORE_FUNCTION_KEY",
    403: "the function key is not allowed to call this function",
    404: "no function at this URL: check --url (it should end in /api/readings)",
    413: "the request was too large for the server: lower --batch-size",
    415: "the server did not accept the body as JSON",
}


def corrupt_reading(reading: dict[str, Any], kind: str) -> dict[str, Any]:
    """Return a copy of `reading` broken in the way named by `kind` (one of the ingest's rules).

    Args:
        reading: A valid reading.
        kind: `non_numeric`, `nan_string`, `missing_device_id`, `bad_timestamp` or
            `upper_metric`.
    """
    bad = {**reading, "metrics": dict(reading["metrics"])}
    name = next(iter(bad["metrics"]), "temperature_c")
    if kind == "non_numeric":
        bad["metrics"][name] = "high"
    elif kind == "nan_string":
        bad["metrics"][name] = "NaN"
    elif kind == "missing_device_id":
        del bad["device_id"]
    elif kind == "bad_timestamp":
        bad["timestamp"] = "27/11/2026 07:00"
    elif kind == "upper_metric":
        bad["metrics"][name.upper()] = bad["metrics"].pop(name, 1.0)
    else:
        raise ValueError(f"unknown corruption {kind!r}; expected one of {_CORRUPTIONS}")
    return bad


@dataclass(frozen=True)
class ClientStats:
    """A consistent snapshot of what the client did, for progress lines and the summary.

    `accepted` counts distinct identities acknowledged with a 202; `rejected` counts good
    readings refused with a 400 (a bug somewhere); `bad_rejected` counts corrupt readings
    refused as expected; `bad_accepted` counts corrupt readings the server took (a validation
    hole); `failed` counts readings given up on (retries exhausted, or not sent after a fatal
    answer or a `cancel()`); `duplicate_acks` counts readings whose identity had been accepted
    before (the same reading submitted twice; a resend after a lost 202 is not one, as the lost
    answer was never counted); `last_error` names the most recent transient problem, for the
    summary.
    """

    requests: int
    submitted: int
    accepted: int
    rejected: int
    bad_rejected: int
    bad_accepted: int
    retries: int
    failed: int
    duplicate_acks: int
    p50_ms: float
    p99_ms: float
    elapsed_s: float
    fatal: str | None
    last_error: str | None = None

    @property
    def rate(self) -> float:
        """Readings acknowledged (202 or expected 400) per second since the first submit."""
        done = self.accepted + self.bad_rejected
        return done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def ok(self) -> bool:
        """True when every reading sent got the answer it should have."""
        return (
            self.fatal is None
            and self.failed == 0
            and self.rejected == 0
            and self.bad_accepted == 0
            and self.accepted + self.duplicate_acks + self.bad_rejected == self.submitted
        )


class _Pacer:
    """A token bucket over readings: `acquire(n)` blocks until n readings may go out.

    The bucket starts empty and holds at most one batch of credit, so bursts never exceed a
    batch and even a short run does not overshoot the target.
    """

    def __init__(
        self,
        rate: float | None,
        burst: int,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
    ) -> None:
        self._rate, self._burst, self._clock, self._sleep = rate, burst, clock, sleep
        self._tokens = 0.0
        self._last: float | None = None

    def start(self, now: float) -> None:
        """Begin earning credit at `now` (the first submit), so the rate is measured from there."""
        if self._last is None:
            self._last = now

    def acquire(self, n: int) -> None:
        if not self._rate:
            return
        now = self._clock()
        if self._last is None:
            self._last = now
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        self._tokens -= n
        if self._tokens < 0:
            wait = -self._tokens / self._rate
            self._sleep(wait)
            self._last = now + wait
            self._tokens = 0.0


class IngestClient:
    """Sends readings to the ingest endpoint and keeps an exact account of what was accepted.

    Args:
        url: The ingest URL, e.g. `http://127.0.0.1:7071/api/readings`.
        key: The function key, sent as `x-functions-key`.
        batch_size: Readings per request (at most 5,000); bodies over 1 MiB are split further.
        max_connections: Concurrent requests (worker threads, one pooled session each).
        timeout: Seconds to connect and to wait for an answer.
        max_retries: Retries of one batch before giving up on it.
        backoff: `(base, cap)` seconds of the exponential backoff with full jitter.
        rate: Target readings per second, or None for as fast as possible.
        bad_fraction: Share (0..1) of readings replaced by corrupt ones, sent in their own
            requests so that one bad reading never takes good ones down with it.
        linger_s: Seconds a partial batch may wait for more readings before it goes out.
        session_factory: Builds a session per worker (a seam for tests).
        clock: Monotonic seconds.
        sleep: Sleeps for backoff and pacing. Left as `time.sleep`, the sleeps wait on the
            cancel event instead, so `cancel()` cuts a long `Retry-After` short.
        rng: Jitter and corruption choices; seed it for reproducible runs.
    """

    def __init__(
        self,
        url: str,
        key: str,
        *,
        batch_size: int = 200,
        max_connections: int = 4,
        timeout: float = 10.0,
        max_retries: int = 8,
        backoff: tuple[float, float] = (0.2, 10.0),
        rate: float | None = None,
        bad_fraction: float = 0.0,
        linger_s: float = 0.5,
        session_factory: Callable[[], requests.Session] = requests.Session,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if not 1 <= batch_size <= MAX_READINGS:
            raise ValueError(f"batch_size must be 1..{MAX_READINGS}, got {batch_size}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        if not 0.0 <= bad_fraction <= 1.0:
            raise ValueError(f"bad_fraction must be within 0..1, got {bad_fraction}")
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be > 0 readings/s, got {rate}")
        self.url, self.batch_size, self.timeout = url, batch_size, timeout
        self.max_retries, self.backoff, self.bad_fraction = max_retries, backoff, bad_fraction
        self.linger_s = linger_s
        self._headers = {"x-functions-key": key, "Content-Type": "application/json"}
        self._session_factory, self._clock, self._sleep = session_factory, clock, sleep
        self._cancelled = threading.Event()
        self._rng = rng or random.Random(0)
        self._rng_lock = threading.Lock()
        self._pacer = _Pacer(rate, batch_size, clock, self._pause)
        self._pool = ThreadPoolExecutor(max_connections, thread_name_prefix="ingest-client")
        # Bounds queued batches so a fast fleet waits for the network instead of eating memory.
        self._slots = threading.BoundedSemaphore(max_connections * 2)
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()
        self._futures: set[Future[None]] = set()
        self._accepted: dict[str, dict[str, None]] = {}
        self._latencies: list[float] = []
        self._counts = dict.fromkeys(
            ("requests", "submitted", "rejected", "bad_rejected", "bad_accepted", "retries"), 0
        )
        self._counts.update(failed=0, duplicate_acks=0, accepted=0)
        self._started: float | None = None
        self._finished: float | None = None
        self._pending: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
        self._pending_since: float | None = None
        self._fatal: str | None = None
        self._last_error: str | None = None

    # --- public API -------------------------------------------------------------------------

    @property
    def fatal(self) -> str | None:
        """The configuration error that stopped the client, if any."""
        return self._fatal

    @property
    def cancelled(self) -> bool:
        """Whether `cancel()` was called."""
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Stop sending: no new attempt is made, and readings not sent count as `failed`.

        Safe from any thread (a watchdog's, or the one that caught Ctrl-C). A request
        already on the wire finishes (its answer still counts); a backoff or pacing wait ends
        at once when the default `time.sleep` is in use. Unlike a fatal answer this says
        nothing about the configuration, so `fatal` stays unset. `flush()` and `close()` then
        return promptly.
        """
        self._cancelled.set()

    def submit(self, readings: Iterable[dict[str, Any]]) -> None:
        """Queue readings; full batches go out now, blocking while connections or rate are busy.

        Readings from several calls are gathered into full batches (few, fat requests); a
        partial batch goes out once its oldest reading has waited `linger_s`, at the next
        `submit`/`poll`, or at `flush`. With `bad_fraction` set, that share of readings is
        replaced by corrupt copies, which travel in requests of their own. Call `submit`,
        `poll` and `flush` from one thread.
        """
        if self._started is None:
            self._started = self._clock()
            self._pacer.start(self._started)
        self._finished = None
        added = 0
        for reading in readings:
            added += 1
            if self.bad_fraction and self._random() < self.bad_fraction:
                kind = _CORRUPTIONS[int(self._random() * len(_CORRUPTIONS))]
                self._pending[True].append(corrupt_reading(reading, kind))
            else:
                self._pending[False].append(reading)
        with self._lock:
            self._counts["submitted"] += added
        if added and self._pending_since is None:
            self._pending_since = self._clock()
        self._drain(partial=False)
        self.poll()

    def poll(self) -> None:
        """Send a partial batch whose oldest reading has waited `linger_s` (call when idle)."""
        if self._pending_since is not None and self._clock() - self._pending_since >= self.linger_s:
            self._drain(partial=True)

    def flush(self) -> None:
        """Send what is queued and wait until every batch has been answered or given up on."""
        self._drain(partial=True)
        while True:
            with self._lock:
                pending = list(self._futures)
            if not pending:
                self._finished = self._clock()  # the rate of a finished run stops decaying
                return
            for future in pending:
                future.result()

    def stats(self) -> ClientStats:
        """Return a consistent snapshot of the counters and request latencies."""
        with self._lock:
            latencies = sorted(self._latencies)
            c = dict(self._counts)
        end = self._finished if self._finished is not None else self._clock()
        elapsed = end - self._started if self._started is not None else 0.0
        return ClientStats(
            requests=c["requests"],
            submitted=c["submitted"],
            accepted=c["accepted"],
            rejected=c["rejected"],
            bad_rejected=c["bad_rejected"],
            bad_accepted=c["bad_accepted"],
            retries=c["retries"],
            failed=c["failed"],
            duplicate_acks=c["duplicate_acks"],
            p50_ms=_percentile(latencies, 0.50),
            p99_ms=_percentile(latencies, 0.99),
            elapsed_s=elapsed,
            fatal=self._fatal,
            last_error=self._last_error,
        )

    def manifest(self) -> dict[str, Any]:
        """Return every accepted identity in compact form: per device, count and time range."""
        with self._lock:
            devices = {
                device: {"accepted": len(stamps), "first": min(stamps), "last": max(stamps)}
                for device, stamps in sorted(self._accepted.items())
            }
        return {"accepted": sum(d["accepted"] for d in devices.values()), "devices": devices}

    def accepted_identities(self) -> set[tuple[str, str]]:
        """Return every `(device_id, timestamp)` acknowledged by the server."""
        with self._lock:
            return {(d, ts) for d, stamps in self._accepted.items() for ts in stamps}

    def write_manifest(self, path: Path | str) -> None:
        """Write `manifest()` as JSON, creating parent folders."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.manifest(), indent=2, sort_keys=True) + "\n")

    def close(self) -> None:
        """Finish sending, stop the workers and close every session."""
        self.flush()
        self._pool.shutdown(wait=True)
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()

    def __enter__(self) -> IngestClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- internals --------------------------------------------------------------------------

    def _random(self) -> float:
        with self._rng_lock:
            return self._rng.random()

    def _drain(self, *, partial: bool) -> None:
        """Dispatch every full batch, and with `partial` the remainders too."""
        for expect_bad, queue in self._pending.items():
            while len(queue) >= self.batch_size or (partial and queue):
                chunk, queue[:] = queue[: self.batch_size], queue[self.batch_size :]
                for batch in _split_by_size(chunk):
                    self._dispatch(batch, expect_bad)
        if not any(self._pending.values()):
            self._pending_since = None

    def _stopped(self) -> bool:
        """Whether no new attempt may be made: a fatal answer or a `cancel()`."""
        return self._fatal is not None or self._cancelled.is_set()

    def _pause(self, seconds: float) -> None:
        """Sleep, cut short by `cancel()` unless a test injected its own sleep."""
        if self._sleep is time.sleep:
            self._cancelled.wait(seconds)
        else:
            self._sleep(seconds)

    def _dispatch(self, batch: list[dict[str, Any]], expect_bad: bool) -> None:
        if self._stopped():
            self._count("failed", len(batch))
            return
        self._pacer.acquire(len(batch))
        self._slots.acquire()
        future = self._pool.submit(self._send, batch, expect_bad)
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: Future[None]) -> None:
        self._slots.release()
        with self._lock:
            self._futures.discard(future)

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = self._session_factory()
            with self._lock:
                self._sessions.append(session)
        return session

    def _send(self, batch: list[dict[str, Any]], expect_bad: bool) -> None:
        body = json.dumps({"readings": batch}, separators=(",", ":")).encode()
        for attempt in range(self.max_retries + 1):
            if self._stopped():
                self._count("failed", len(batch))
                return
            if attempt:
                self._count("retries")
            retry_after: float | None = None
            started = self._clock()
            try:
                response = self._session().post(
                    self.url, data=body, headers=self._headers, timeout=self.timeout
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                self._count("requests")
                self._last_error = f"{type(exc).__name__} from {self.url}"
            else:
                with self._lock:
                    self._counts["requests"] += 1
                    self._latencies.append((self._clock() - started) * 1000.0)
                status = response.status_code
                response.close()
                if status == 202:
                    self._record_accepted(batch, expect_bad)
                    return
                if status == 400:
                    self._count("bad_rejected" if expect_bad else "rejected", len(batch))
                    return
                if status in FATAL_STATUSES or (status not in RETRY_STATUSES and status < 500):
                    hint = _FATAL_HINTS.get(status, "unexpected answer")
                    with self._lock:
                        self._fatal = self._fatal or f"HTTP {status} from {self.url}: {hint}"
                    self._count("failed", len(batch))
                    return
                retry_after = _parse_retry_after(response.headers.get("Retry-After"))
                self._last_error = f"HTTP {status} from {self.url}"
            if attempt < self.max_retries:
                self._pause(self._delay(attempt, retry_after))
        self._count("failed", len(batch))

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        base, cap = self.backoff
        with self._rng_lock:
            jitter = self._rng.uniform(0.0, min(cap, base * 2**attempt))
        return max(jitter, retry_after) if retry_after is not None else jitter

    def _record_accepted(self, batch: Sequence[dict[str, Any]], expect_bad: bool) -> None:
        with self._lock:
            if expect_bad:
                self._counts["bad_accepted"] += len(batch)
                return
            for reading in batch:
                stamps = self._accepted.setdefault(reading["device_id"], {})
                if reading["timestamp"] in stamps:
                    self._counts["duplicate_acks"] += 1
                else:
                    stamps[reading["timestamp"]] = None
                    self._counts["accepted"] += 1


def _split_by_size(batch: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Halve a batch until each half's body fits in 1 MiB (a lone reading is sent as is)."""
    size = len(json.dumps({"readings": batch}, separators=(",", ":")).encode())
    if size <= MAX_BODY_BYTES or len(batch) == 1:
        return [batch]
    middle = len(batch) // 2
    return _split_by_size(batch[:middle]) + _split_by_size(batch[middle:])


def _parse_retry_after(value: str | None) -> float | None:
    """Read `Retry-After` in seconds (the HTTP-date form is rare here and ignored)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, _MAX_RETRY_AFTER_S)


def _percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list, 0.0 when empty."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]
