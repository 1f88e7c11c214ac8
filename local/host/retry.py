"""Function retry policies and host TimeSpans, read the way the Functions host reads them.

A policy comes from a function.json's `retry` object (or, for every function, host.json's):

    {"strategy": "exponentialBackoff", "maxRetryCount": -1,
     "minimumInterval": "00:00:05", "maximumInterval": "00:05:00"}
    {"strategy": "fixedDelay", "maxRetryCount": 3, "delayInterval": "00:00:10"}

`maxRetryCount` counts retries after the first attempt; -1 retries until the host stops. The
host adds a little random jitter to exponential delays; here they are exact (min × 2ⁿ⁻¹,
capped at the maximum), so tests can reason about them.

Example:
    >>> policy = parse_retry_policy({"strategy": "fixedDelay", "maxRetryCount": 2,
    ...                              "delayInterval": "00:00:01.5"}, where="f/function.json")
    >>> [policy.delay(n) for n in (1, 2, 3)]
    [1.5, 1.5, None]
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import AppConfigError

__all__ = ["STRATEGIES", "RetryPolicy", "parse_retry_policy", "parse_timespan"]

STRATEGIES = ("exponentialBackoff", "fixedDelay")

# .NET TimeSpan text: [d.]hh:mm:ss[.fffffff]
_TIMESPAN = re.compile(r"(?:(\d+)\.)?(\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d{1,7}))?")


def parse_timespan(text: Any, *, where: str) -> float:
    """`"00:00:02"`, `"1.00:00:00"` or `"00:00:00.250"` -> seconds.

    Raises:
        AppConfigError: Not a TimeSpan string; the message says where it came from.
    """
    match = _TIMESPAN.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise AppConfigError(f"{where}: expected a TimeSpan like '00:00:05', got {text!r}")
    days, hours, minutes, seconds, fraction = match.groups()
    if int(minutes) > 59 or int(seconds) > 59:
        raise AppConfigError(f"{where}: {text!r} has minutes or seconds over 59")
    return (
        int(days or 0) * 86400
        + int(hours) * 3600
        + int(minutes) * 60
        + int(seconds)
        + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)
    )


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When to call a failed function again; `max_retries` None means until the host stops."""

    strategy: str
    max_retries: int | None
    minimum_interval: float
    maximum_interval: float

    def delay(self, retry: int) -> float | None:
        """Seconds to wait before retry number `retry` (1 = the first retry); None = give up."""
        if retry < 1:
            raise ValueError("retry numbers start at 1")
        if self.max_retries is not None and retry > self.max_retries:
            return None
        if self.strategy == "fixedDelay":
            return self.minimum_interval
        # 2 ** 60 seconds is far past any maximum; capping the exponent avoids huge floats.
        return min(self.maximum_interval, self.minimum_interval * 2 ** min(retry - 1, 60))


def parse_retry_policy(doc: Mapping[str, Any] | None, *, where: str) -> RetryPolicy | None:
    """Read a `retry` object; None (no policy: one attempt) when `doc` is None.

    Raises:
        AppConfigError: Unknown strategy, a bad count or interval; names the field.
    """
    if doc is None:
        return None
    if not isinstance(doc, Mapping):
        raise AppConfigError(f"{where}: 'retry' must be an object")
    strategy = doc.get("strategy")
    matched = [s for s in STRATEGIES if isinstance(strategy, str) and s.lower() == strategy.lower()]
    if not matched:
        raise AppConfigError(
            f"{where}: retry.strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}"
        )
    count = doc.get("maxRetryCount")
    if isinstance(count, bool) or not isinstance(count, int) or count < -1:
        raise AppConfigError(f"{where}: retry.maxRetryCount must be -1 or more, got {count!r}")
    if matched[0] == "fixedDelay":
        delay = parse_timespan(doc.get("delayInterval"), where=f"{where}: retry.delayInterval")
        low = high = delay
    else:
        low = parse_timespan(doc.get("minimumInterval"), where=f"{where}: retry.minimumInterval")
        high = parse_timespan(doc.get("maximumInterval"), where=f"{where}: retry.maximumInterval")
        if high < low:
            raise AppConfigError(f"{where}: retry.maximumInterval is below minimumInterval")
    return RetryPolicy(
        strategy=matched[0],
        max_retries=None if count == -1 else count,
        minimum_interval=low,
        maximum_interval=high,
    )
