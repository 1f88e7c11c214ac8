"""The Azure ML online endpoint client: classified errors, retries, adaptive concurrency.

Error classes follow what AML documents for managed online endpoints: 408 (request timeout),
429 (more than 2 × max_concurrent_requests_per_instance × instances in flight), 5xx, and 424
(the model container failed) whose `ms-azureml-model-error-statuscode` header carries the
model's own status. Transient ones retry with exponential backoff and full jitter, honouring
`Retry-After` when present, until a deadline. 401/403/404 mean the endpoint is misconfigured:
they are not the data's fault, so they must fail the invocation (and hold the checkpoint)
rather than dead-letter readings.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import orjson
import requests
from requests.adapters import HTTPAdapter

from .errors import FleetscoreError, PermanentError, TransientError
from .retry import RetryPolicy, parse_retry_after
from .sessions import without_idle_lookups

__all__ = [
    "AdaptiveLimit",
    "AmlClient",
    "EndpointConfigError",
    "RetryPolicy",
    "Scorer",
    "parse_retry_after",
]

log = logging.getLogger(__name__)

_TRANSIENT = frozenset({408, 429, 500, 502, 503, 504})
_CONFIG = frozenset({401, 403, 404, 405})


class EndpointConfigError(FleetscoreError):
    """Every request is refused (key, URL, deployment): fix settings; never dead-letter."""

    def __init__(self, message: str, *, status: int) -> None:
        self.status = status
        super().__init__(message)


class Scorer(Protocol):
    """Anything that scores one request body: the AML client, or a stand-in in tests."""

    def score(self, body: bytes) -> dict[str, Any]:
        """Return the parsed response.

        Raises:
            TransientError: worth retrying (with `retry_after` if the server said so).
            PermanentError: the request itself is refused (split it to find the culprit).
            EndpointConfigError: no request can succeed with these settings.
        """
        ...


class AmlClient:
    """POSTs scoring requests to an AML online endpoint over one pooled HTTP session."""

    def __init__(
        self,
        url: str,
        key: str,
        *,
        deployment: str | None = None,
        timeout: float = 30.0,
        pool_size: int = 8,
        session: requests.Session | None = None,
    ) -> None:
        self.url = url
        self._headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        if deployment:
            self._headers["azureml-model-deployment"] = deployment
        self._timeout = (5.0, timeout)
        self._session = session or without_idle_lookups(requests.Session())
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)

    def score(self, body: bytes) -> dict[str, Any]:
        """Send one request; see `Scorer.score` for the errors."""
        try:
            resp = self._session.post(
                self.url, data=body, headers=self._headers, timeout=self._timeout
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TransientError(f"AML endpoint unreachable: {type(exc).__name__}") from exc
        status = resp.status_code
        if status == 200:
            try:
                doc = orjson.loads(resp.content)  # strict: NaN and Infinity are not JSON
            except ValueError as exc:
                raise PermanentError("AML response is not JSON", status=status) from exc
            if isinstance(doc, str):  # a scoring script that returns a JSON string
                try:
                    doc = orjson.loads(doc)
                except ValueError as exc:
                    raise PermanentError("AML response is not JSON", status=status) from exc
            if not isinstance(doc, dict):
                raise PermanentError("AML response is not a JSON object", status=status)
            return doc
        detail = resp.text[:300]
        if status == 424:
            model_status = resp.headers.get("ms-azureml-model-error-statuscode", "")
            if model_status.startswith("5") or not model_status:
                raise TransientError(f"AML model error {model_status or '?'}: {detail}")
            raise PermanentError(
                f"AML model refused the request ({model_status}): {detail}", status=424
            )
        if status in _TRANSIENT:
            raise TransientError(
                f"AML answered {status}",
                retry_after=parse_retry_after(resp.headers.get("Retry-After")),
                status=status,
            )
        if status in _CONFIG:
            raise EndpointConfigError(
                f"AML answered {status}: check AML_ENDPOINT_URL/KEY", status=status
            )
        if status >= 500:
            raise TransientError(f"AML answered {status}", status=status)
        raise PermanentError(f"AML refused the request ({status}): {detail}", status=status)

    def close(self) -> None:
        """Close pooled connections."""
        self._session.close()


class AdaptiveLimit:
    """A concurrency limit that halves on 429 and grows by one after a window of successes.

    AML starts answering 429 when too many requests are in flight, so the client backs off
    multiplicatively and probes upward slowly (AIMD, like TCP) instead of hammering. Like TCP,
    it cuts once per congestion event: answers to requests sent before the last cut do not cut
    again, so four simultaneous 429s halve the limit once, not four times.
    """

    def __init__(self, maximum: int, *, initial: int | None = None) -> None:
        if maximum < 1:
            raise ValueError("maximum must be >= 1")
        self.maximum = maximum
        self.limit = min(maximum, initial or maximum)
        self._in_flight = 0
        self._successes = 0
        self._generation = 0
        self._cond = threading.Condition()

    def acquire(self) -> int:
        """Block until a slot under the current limit is free; return a ticket for `release`."""
        with self._cond:
            while self._in_flight >= self.limit:
                self._cond.wait()
            self._in_flight += 1
            return self._generation

    def release(self, ticket: int | None = None, *, throttled: bool = False) -> None:
        """Free a slot and adapt: halve on throttling (once per cut), +1 after `limit` successes."""
        with self._cond:
            self._in_flight -= 1
            if throttled:
                if ticket is None or ticket >= self._generation:
                    self.limit = max(1, self.limit // 2)
                    self._generation += 1
                self._successes = 0
            else:
                self._successes += 1
                if self._successes >= self.limit and self.limit < self.maximum:
                    self.limit += 1
                    self._successes = 0
            self._cond.notify_all()

    @property
    def in_flight(self) -> int:
        """Requests currently holding a slot."""
        with self._cond:
            return self._in_flight


def call_with_retry(
    scorer: Scorer,
    body: bytes,
    *,
    limit: AdaptiveLimit,
    policy: RetryPolicy,
    deadline: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> dict[str, Any]:
    """Score `body`, retrying transient failures until `deadline` (a `clock()` value).

    Raises:
        TransientError: still failing when the next wait would pass the deadline.
        PermanentError, EndpointConfigError: as the scorer raised them, without retrying.
    """
    rng = rng or random.Random()
    attempt = 0
    while True:
        ticket = limit.acquire()
        throttled = False
        try:
            return scorer.score(body)
        except TransientError as exc:
            throttled = exc.status == 429
            wait = policy.delay(attempt, rng, exc.retry_after)
            if clock() + wait > deadline:
                raise TransientError(
                    f"gave up after {attempt + 1} attempts: {exc}", retry_after=exc.retry_after
                ) from exc
            log.warning("scoring attempt %d failed (%s); retrying in %.2fs", attempt + 1, exc, wait)
        finally:
            limit.release(ticket, throttled=throttled)
        sleep(wait)
        attempt += 1
