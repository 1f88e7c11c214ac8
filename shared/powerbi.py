"""The Power BI sink: live aggregate and anomaly rows pushed to a Power BI push dataset.

Table Storage is the system of record; Power BI is a window onto it. So the sink must never
block or fail scoring: `offer()` only aggregates in memory (no I/O, never raises) and a
background thread (`start()` / `close()`) posts rows. Tests call `pump()` with a fake clock.

What is pushed. Readings are far too many for Power BI, so per device per *processing-time*
interval (default 60 s, aligned to the wall-clock minute) one row goes to `DeviceAggregates`,
and every prediction with `is_anomaly` goes to `Anomalies` as soon as it is offered.
Processing time, not event time, because it keeps rows flowing on a steady cadence and a late
or replayed batch cannot reopen a window already sent; `last_timestamp` carries event time.

Two ways in (a `PushTarget`):
  * REST API: `POST {api_url}/v1.0/myorg[/groups/{workspace}]/datasets/{id}/tables/{t}/rows`,
    body `{"rows": [...]}`, `Authorization: Bearer` from a token provider (Entra ID; for the
    local dashboard stand-in only, the fixed POWERBI_ACCESS_TOKEN).
  * Push URLs that Power BI shows for a dataset made in its UI: body is a bare JSON array and
    each URL addresses a single table, so there are two settings, `aggregates_url` and
    `anomalies_url`; a kind whose URL is absent is not pushed at all. The app has a single
    POWERBI_PUSH_URL, which carries the aggregate rows (anomalies need the REST API). The `key`
    in the query string is a secret: query strings are cut out of every URL and error logged.

Power BI's documented push-dataset limits ("Push semantic model limitations",
learn.microsoft.com/power-bi/developer/embedded/push-datasets-limitations), and how they hold:
  * 10,000 rows per POST: batches are cut at `max_rows_per_post` (at most 10,000).
  * 120 POST rows requests per minute per dataset: a token bucket of `posts_per_minute`
    (default 100) with a burst of 10, so any 60 s holds at most 110 posts.
  * 1,000,000 rows per hour per dataset: a row bucket of `rows_per_hour` (default 900,000)
    whose burst is one full POST, so any hour holds at most 910,000 rows.
  * 5 pending POST requests per dataset: posting is sequential, so at most 1 is pending.
  * A table of 250,000 rows or more drops to 120 POSTs per *hour*: the dataset must be created
    with the `basicFIFO` retention policy (200,000 rows kept per table), so no table reaches
    250,000 and this rule never applies. The sink assumes basicFIFO and does not pace for it.
  * 4,000 characters per string value: `model_version` and `top_metric` are cut to fit.

Failures. 429 pauses all posting until `Retry-After` (backoff if absent); 408, 401, 403, 5xx
and connection errors back off exponentially with jitter and keep the rows; any other 4xx
(400 bad rows, 404 unknown table) drops the POST's rows, counted, with a WARNING naming the
status and Power BI's error text. Rows are sent oldest first across the two tables.

Memory. At most `max_queued_rows` rows wait; the open window holds one small record per device
that reported in the interval. When full, the oldest aggregate row is evicted first (a newer
window supersedes it), then the oldest anomaly row: anomalies have priority. Rows queued longer
than `max_row_age_seconds` are dropped. Every dropped row is counted in `stats` and summarised
in at most one WARNING a minute. After close, offered == pushed + dropped.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

import requests
from azure.core.credentials import TokenCredential

from .errors import ConfigError
from .predictions import Prediction
from .readings import format_timestamp
from .retry import parse_retry_after

if TYPE_CHECKING:
    from .settings import Settings

__all__ = [
    "DATASET_TABLES",
    "POWERBI_SCOPE",
    "NullSink",
    "PowerBISink",
    "PushTarget",
    "Sink",
    "SinkStats",
    "TokenProvider",
    "Transport",
    "entra_token_provider",
    "requests_transport",
    "sink_from_settings",
]

log = logging.getLogger(__name__)

POWERBI_SCOPE = "https://analysis.windows.net/powerbi/api/.default"
Transport = Callable[[str, bytes, dict[str, str]], tuple[int, dict[str, str], bytes]]
"""(url, body, headers) → (status, response headers, body); connection errors raise."""
TokenProvider = Callable[[], str]

DATASET_TABLES: dict[str, dict[str, str]] = {
    "DeviceAggregates": {
        "device_id": "String",
        "window_start": "DateTime",
        "readings": "Int64",
        "anomalies": "Int64",
        "mean_anomaly_score": "Double",
        "max_anomaly_score": "Double",
        "failure_probability": "Double",
        "max_failure_probability": "Double",
        "maintenance_due": "Boolean",
        "last_timestamp": "DateTime",
    },
    "Anomalies": {
        "device_id": "String",
        "timestamp": "DateTime",
        "anomaly_score": "Double",
        "top_metric": "String",
        "failure_probability": "Double",
        "maintenance_due": "Boolean",
        "model_version": "String",
    },
}
"""The push dataset the sink writes: table → column → Power BI dataType.

The columns are exactly the keys of the rows this module builds (a test holds them equal), so
`python -m fleetscore powerbi create-dataset` and the dashboard stand-in both take them from here.
"""

_AGG, _ANOM = "aggregates", "anomalies"
_MAX_STRING = 4000
_POST_BURST = 10
_DROP_LOG_EVERY = 60.0
_MAX_IDLE = 1.0
_QUERY = re.compile(r"\?[^\s'\")]*")
_Row = tuple[float, dict[str, Any]]  # (enqueued at, row)


class Sink(Protocol):
    """What the score function pushes predictions to after storing them."""

    def offer(self, predictions: Sequence[Prediction]) -> None:
        """Take a stored batch; must not block, do I/O or raise."""

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what can be delivered within `timeout` seconds, then stop."""


class NullSink:
    """The sink used when Power BI is not configured: accepts everything, does nothing."""

    def offer(self, predictions: Sequence[Prediction]) -> None:
        """Ignore the batch."""

    def close(self, timeout: float = 10.0) -> None:
        """Nothing to close."""


@dataclass(frozen=True, slots=True)
class PushTarget:
    """Where rows go: a REST dataset (`dataset_id`) or push URLs, never both.

    The push URLs hold a key, so they are left out of `repr`.
    """

    dataset_id: str | None = None
    workspace_id: str | None = None
    api_url: str = "https://api.powerbi.com"
    aggregates_table: str = "DeviceAggregates"
    anomalies_table: str = "Anomalies"
    aggregates_url: str | None = field(default=None, repr=False)
    anomalies_url: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        push = self.aggregates_url or self.anomalies_url
        if self.dataset_id and push:
            raise ConfigError("POWERBI_DATASET_ID", "set a dataset id or push URLs, not both")
        if not self.dataset_id and not push:
            raise ConfigError("POWERBI_DATASET_ID", "set a dataset id or a push URL")
        for name in ("aggregates_url", "anomalies_url", "api_url"):
            url = getattr(self, name)
            if url and not url.startswith(("https://", "http://")):
                raise ConfigError(f"POWERBI_{name.upper()}", "must be an http(s) URL")

    @property
    def uses_rest(self) -> bool:
        """True when rows go through the REST API and need a bearer token."""
        return bool(self.dataset_id)

    def url_for(self, kind: str) -> str | None:
        """Return the POST URL for `aggregates` or `anomalies` rows, or None if not pushed."""
        if not self.uses_rest:
            return self.aggregates_url if kind == _AGG else self.anomalies_url
        table = self.aggregates_table if kind == _AGG else self.anomalies_table
        group = f"/groups/{quote(self.workspace_id, safe='')}" if self.workspace_id else ""
        dataset = quote(self.dataset_id or "", safe="")
        base = self.api_url.rstrip("/")
        return f"{base}/v1.0/myorg{group}/datasets/{dataset}/tables/{quote(table, safe='')}/rows"


@dataclass(slots=True)
class SinkStats:
    """Row and request counters; `posts` counts every POST sent, failed ones included."""

    rows_offered: int = 0
    rows_pushed: int = 0
    rows_dropped: int = 0
    posts: int = 0
    throttled: int = 0
    failures: int = 0


def requests_transport(session: requests.Session, timeout: float = 10.0) -> Transport:
    """Return the production transport: one POST through `session`, header names lower-cased."""

    def send(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        with session.post(url, data=body, headers=headers, timeout=timeout) as response:
            lowered = {k.lower(): v for k, v in response.headers.items()}
            return response.status_code, lowered, response.content

    return send


def entra_token_provider(
    credential: TokenCredential,
    *,
    scope: str = POWERBI_SCOPE,
    refresh_margin: float = 300.0,
    now: Callable[[], float] = time.time,
) -> TokenProvider:
    """Return a provider of Power BI bearer tokens from an azure-identity credential.

    The token is reused until `refresh_margin` seconds before its `expires_on`, so the
    identity endpoint is asked about once an hour, not once per POST.
    """
    lock = threading.Lock()
    cached: list[Any] = []

    def provide() -> str:
        with lock:
            if not cached or now() >= cached[0].expires_on - refresh_margin:
                cached[:] = [credential.get_token(scope)]
            return str(cached[0].token)

    return provide


def _redact(text: str) -> str:
    """Cut every query string out of `text`: push URLs carry their key there."""
    return _QUERY.sub("?…", text)


def _cut(text: str | None) -> str | None:
    return text[:_MAX_STRING] if text is not None else None


class _Bucket:
    """A token bucket: `burst` tokens at most, refilled at `rate` per second."""

    def __init__(self, burst: float, rate: float, now: float) -> None:
        self.burst, self.rate, self.tokens, self.at = burst, rate, burst, now

    def wait(self, n: float, now: float) -> float:
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        return 0.0 if self.tokens >= n - 1e-6 else (n - self.tokens) / self.rate


class _Window:
    """One device's running aggregate in the open window."""

    __slots__ = ("anomalies", "due", "fp", "fp_max", "last_ts", "n", "score_max", "score_sum")

    def __init__(self, p: Prediction) -> None:
        self.n, self.anomalies = 1, int(p.is_anomaly)
        self.score_sum = self.score_max = p.anomaly_score
        self.last_ts, self.fp, self.due = p.timestamp, p.failure_probability, p.maintenance_due
        self.fp_max = p.failure_probability

    def add(self, p: Prediction) -> None:
        self.n += 1
        self.anomalies += p.is_anomaly
        self.score_sum += p.anomaly_score
        self.score_max = max(self.score_max, p.anomaly_score)
        fp = p.failure_probability
        if fp is not None and (self.fp_max is None or fp > self.fp_max):
            self.fp_max = fp
        if p.timestamp >= self.last_ts:
            self.last_ts, self.fp, self.due = p.timestamp, fp, p.maintenance_due


class PowerBISink:
    """Aggregates predictions in memory and pushes rows to Power BI within its limits.

    Args:
        target: where rows go.
        transport: the HTTP seam (`requests_transport(session)` in production).
        token_provider: bearer tokens; required for REST targets.
        clock: monotonic seconds; drives windows, pacing, backoff and ageing.
        now: wall-clock UTC, read once here to label windows.
        rng: jitter for backoff.
    """

    def __init__(
        self,
        target: PushTarget,
        *,
        transport: Transport,
        token_provider: TokenProvider | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
        interval_seconds: float = 60.0,
        max_queued_rows: int = 100_000,
        max_row_age_seconds: float = 3600.0,
        posts_per_minute: float = 100.0,
        rows_per_hour: float = 900_000.0,
        max_rows_per_post: int = 10_000,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
    ) -> None:
        if target.uses_rest and token_provider is None:
            raise ConfigError("POWERBI_CLIENT_ID", "a REST target needs a token provider")
        if not 0 < posts_per_minute <= 120 - _POST_BURST:
            raise ConfigError("POWERBI_POSTS_PER_MINUTE", f"{posts_per_minute} breaks 120/min")
        if not (0 < max_rows_per_post <= 10_000 and 0 < rows_per_hour <= 1e6 - max_rows_per_post):
            raise ConfigError("POWERBI_ROWS_PER_HOUR", "pacing would break 10,000/POST or 1M/h")
        if interval_seconds <= 0 or max_queued_rows < 1:
            raise ConfigError("POWERBI_INTERVAL_SECONDS", "interval and queue cap must be > 0")
        self._target, self._transport, self._tokens = target, transport, token_provider
        self._urls = {kind: target.url_for(kind) for kind in (_AGG, _ANOM)}
        self._clock, self._rng = clock, rng or random.Random()
        self._interval, self._cap = interval_seconds, max_queued_rows
        self._max_age, self._rows_per_post = max_row_age_seconds, max_rows_per_post
        self._backoff = (backoff_base, backoff_cap)
        start = clock()
        self._offset = now().timestamp() - start  # monotonic → epoch seconds
        self._posts = _Bucket(_POST_BURST, posts_per_minute / 60.0, start)
        self._rows = _Bucket(max_rows_per_post, rows_per_hour / 3600.0, start)
        self._lock = threading.Lock()  # guards queues, the open window and the counters
        self._queues: dict[str, deque[_Row]] = {_AGG: deque(), _ANOM: deque()}
        self._open: dict[str, _Window] = {}
        self._open_index = self._index(start)
        self._stats, self._drops, self._bad_input = SinkStats(), dict[str, int](), 0
        self._next_drop_log = self._paused_until = start
        self._attempt, self._closed, self._drain_deadline = 0, False, math.inf
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def stats(self) -> SinkStats:
        """A snapshot of the counters."""
        with self._lock:
            return replace(self._stats)

    @property
    def pending(self) -> int:
        """Rows queued for posting (the open window not included)."""
        with self._lock:
            return len(self._queues[_AGG]) + len(self._queues[_ANOM])

    def offer(self, predictions: Sequence[Prediction]) -> None:
        """Fold a stored batch into the open window and queue its anomaly rows.

        O(len(predictions)) dict work under a lock; never does I/O, never raises: a bad item
        is skipped and counted, and the background thread logs it.
        """
        try:
            if self._closed or not predictions:
                return
            now = self._clock()
            aggregate, anomalies = self._urls[_AGG] is not None, self._urls[_ANOM] is not None
            with self._lock:
                self._roll(now)
                for p in predictions:
                    if not isinstance(p, Prediction):
                        self._bad_input += 1
                        continue
                    if aggregate:
                        window = self._open.get(p.device_id)
                        if window is None:
                            self._open[p.device_id] = _Window(p)
                        else:
                            window.add(p)
                    if anomalies and p.is_anomaly:
                        self._enqueue(_ANOM, self._anomaly_row(p), now)
            self._wake.set()
        except Exception:
            self._bad_input += 1

    def pump(self) -> float:
        """Do at most one POST if pacing allows; return seconds until it is worth calling again.

        The background thread calls this in a loop; tests call it directly with a fake clock.
        Never call it while the thread runs: pacing state belongs to one caller.
        """
        now = self._clock()
        with self._lock:
            self._roll(now, force=self._stop.is_set())
            self._expire(now)
            heads = [(q[0][0], kind) for kind, q in self._queues.items() if q]
            kind = min(heads, key=lambda h: (h[0], h[1] != _ANOM))[1] if heads else None
            n = min(len(self._queues[kind]), self._rows_per_post) if kind else 0
        self._log_drops(now)
        idle = max(min(self._window_end() - now, _MAX_IDLE), 1e-3)
        if kind is None:
            return idle
        wait = max(self._paused_until - now, self._posts.wait(1, now), self._rows.wait(n, now))
        if wait > 0:
            return max(min(wait, idle), 1e-3)  # never a delay too small to move a float clock
        self._posts.tokens -= 1
        self._rows.tokens -= n
        with self._lock:
            queue = self._queues[kind]
            batch = [queue.popleft() for _ in range(min(n, len(queue)))]
        self._post(kind, batch)
        return 0.0

    def start(self) -> None:
        """Start the background posting thread (a daemon; `close()` joins it)."""
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(target=self._run, name="powerbi-sink", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Flush the open window, post for up to `timeout` s, count what is left as dropped."""
        if self._closed:
            return
        self._closed = True
        thread = self._thread
        if thread is not None:
            self._drain_deadline = self._clock() + 0.8 * timeout
            self._stop.set()
            self._wake.set()
            thread.join(timeout)
            if thread.is_alive():
                log.warning("Power BI sink thread still posting after %.1f s", timeout)
                return
        with self._lock:
            self._roll(self._clock(), force=True)
            for queue in self._queues.values():
                self._drop("closed", len(queue))
                queue.clear()
        self._log_drops(math.inf)

    def _run(self) -> None:
        while True:
            try:
                delay = self.pump()
            except Exception:  # a bug must not kill the thread: scoring never notices it
                log.exception("Power BI sink pump failed")
                delay = _MAX_IDLE
            done = not (self.pending or self._open) or self._clock() >= self._drain_deadline
            if self._stop.is_set() and done:
                return
            if delay > 0:
                self._wake.wait(min(delay, max(self._drain_deadline - self._clock(), 0.0)))
                self._wake.clear()

    def _index(self, now: float) -> int:
        return math.floor((now + self._offset) / self._interval)

    def _window_end(self) -> float:
        return (self._open_index + 1) * self._interval - self._offset

    def _roll(self, now: float, *, force: bool = False) -> None:
        """Close the open window into aggregate rows once its interval is over (lock held)."""
        index = self._index(now)
        if index == self._open_index and not force:
            return
        start = format_timestamp(datetime.fromtimestamp(self._open_index * self._interval, UTC))
        for device_id, w in self._open.items():
            row = {
                "device_id": device_id,
                "window_start": start,
                "readings": w.n,
                "anomalies": w.anomalies,
                "mean_anomaly_score": w.score_sum / w.n,
                "max_anomaly_score": w.score_max,
                "failure_probability": w.fp,
                "max_failure_probability": w.fp_max,
                "maintenance_due": w.due,
                "last_timestamp": format_timestamp(w.last_ts),
            }
            self._enqueue(_AGG, row, now)
        self._open = {}
        self._open_index = index

    @staticmethod
    def _anomaly_row(p: Prediction) -> dict[str, Any]:
        return {
            "device_id": p.device_id,
            "timestamp": format_timestamp(p.timestamp),
            "anomaly_score": p.anomaly_score,
            "top_metric": _cut(p.top_metric),
            "failure_probability": p.failure_probability,
            "maintenance_due": p.maintenance_due,
            "model_version": _cut(p.model_version),
        }

    def _enqueue(self, kind: str, row: dict[str, Any], now: float) -> None:
        """Queue one new row, evicting by priority when full (lock held)."""
        self._stats.rows_offered += 1
        aggs, anoms = self._queues[_AGG], self._queues[_ANOM]
        if len(aggs) + len(anoms) >= self._cap:
            if aggs:
                aggs.popleft()
            elif kind == _AGG:
                self._drop("queue full", 1)
                return
            else:
                anoms.popleft()
            self._drop("queue full", 1)
        self._queues[kind].append((now, row))

    def _requeue(self, kind: str, batch: list[_Row]) -> None:
        with self._lock:
            self._queues[kind].extendleft(reversed(batch))
            aggs, anoms = self._queues[_AGG], self._queues[_ANOM]
            while len(aggs) + len(anoms) > self._cap:
                (aggs or anoms).popleft()
                self._drop("queue full", 1)

    def _expire(self, now: float) -> None:
        for queue in self._queues.values():
            while queue and queue[0][0] < now - self._max_age:
                queue.popleft()
                self._drop("too old", 1)

    def _drop(self, reason: str, n: int) -> None:
        if n:
            self._stats.rows_dropped += n
            self._drops[reason] = self._drops.get(reason, 0) + n

    def _log_drops(self, now: float) -> None:
        if now < self._next_drop_log or not (self._drops or self._bad_input):
            return
        with self._lock:
            drops, self._drops = self._drops, {}
            bad, self._bad_input = self._bad_input, 0
        self._next_drop_log = now + _DROP_LOG_EVERY
        if drops:
            log.warning(
                "Power BI sink dropped rows: %s", ", ".join(f"{k}: {v}" for k, v in drops.items())
            )
        if bad:
            log.warning("Power BI sink skipped %d offered items that were not predictions", bad)

    def _post(self, kind: str, batch: list[_Row]) -> None:
        url = self._urls[kind] or ""
        rows = [row for _, row in batch]
        doc: object = {"rows": rows} if self._target.uses_rest else rows
        body = json.dumps(doc, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        with self._lock:
            self._stats.posts += 1
        try:
            if self._tokens is not None and self._target.uses_rest:
                headers["Authorization"] = f"Bearer {self._tokens()}"
            status, reply_headers, reply = self._transport(url, body, headers)
        except Exception as exc:  # connection errors, timeouts, token failures: transient
            why = f"{type(exc).__name__} posting to {_redact(url)}: {_redact(str(exc))[:300]}"
            self._retry_later(kind, batch, None, why)
            return
        if status == 429:
            hint = {k.lower(): v for k, v in reply_headers.items()}.get("retry-after")
            seconds = parse_retry_after(hint)
            with self._lock:
                self._stats.throttled += 1
            self._retry_later(kind, batch, seconds, f"429 throttled by {_redact(url)}")
        elif status in (401, 403, 408) or status >= 500:
            self._retry_later(kind, batch, None, f"{status} from {_redact(url)}")
        else:
            self._attempt = 0
            with self._lock:
                if 200 <= status < 300:
                    self._stats.rows_pushed += len(batch)
                else:
                    self._drop("rejected", len(batch))
            if status >= 300:
                text = _redact(reply[:500].decode("utf-8", "replace"))
                log.warning("Power BI rejected %d %s rows: %d %s", len(batch), kind, status, text)

    def _retry_later(self, kind: str, batch: list[_Row], seconds: float | None, why: str) -> None:
        """Put the batch back in front and pause all posting (Retry-After, else backoff)."""
        if seconds is None:
            base, cap = self._backoff
            ceiling = min(cap, base * 2.0**self._attempt)
            seconds = ceiling / 2 + self._rng.uniform(0, ceiling / 2)
            self._attempt += 1
            with self._lock:
                self._stats.failures += 1
        self._paused_until = self._clock() + seconds
        self._requeue(kind, batch)
        log.warning("Power BI sink pausing %.1f s: %s", seconds, why)


def _credential_for(settings: Settings) -> TokenCredential:
    """A service principal when tenant, client and secret are set, else managed identity."""
    from azure.identity import ClientSecretCredential, DefaultAzureCredential

    tenant, client = settings.powerbi_tenant_id, settings.powerbi_client_id
    secret = settings.powerbi_client_secret
    if secret:
        if not (tenant and client):
            raise ConfigError("POWERBI_TENANT_ID", "a client secret needs tenant and client ids")
        return ClientSecretCredential(tenant, client, secret)
    return DefaultAzureCredential(managed_identity_client_id=client or None)


def sink_from_settings(
    settings: Settings,
    *,
    transport: Transport | None = None,
    credential: TokenCredential | None = None,
    start: bool = True,
) -> PowerBISink:
    """Build the app's sink from its settings, start its thread and close it at exit.

    Raises:
        ConfigError: naming the setting when the target or the credentials are incomplete.
    """
    target = PushTarget(
        dataset_id=settings.powerbi_dataset_id or None,
        workspace_id=settings.powerbi_workspace_id or None,
        api_url=settings.powerbi_api_url or "https://api.powerbi.com",
        aggregates_url=settings.powerbi_push_url or None,
    )
    provider: TokenProvider | None = None
    if target.uses_rest and settings.powerbi_access_token:
        token = settings.powerbi_access_token  # local stand-in only; settings check the URL

        def provider() -> str:
            return token

    elif target.uses_rest:
        provider = entra_token_provider(credential or _credential_for(settings))
    sink = PowerBISink(
        target,
        transport=transport or requests_transport(requests.Session()),
        token_provider=provider,
        interval_seconds=settings.powerbi_interval_seconds,
        # Power BI's limits are per dataset; every host pushing to it takes an equal share.
        posts_per_minute=100.0 / settings.powerbi_writers,
        rows_per_hour=900_000.0 / settings.powerbi_writers,
    )
    if start:
        sink.start()
        atexit.register(sink.close, 5.0)  # daemon threads still run while atexit hooks do
    return sink
