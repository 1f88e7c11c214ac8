"""Retrying at I/O edges: backoff with full jitter, and the servers' own `Retry-After` hint.

One place for both, used by the AML client, the table store and the Power BI sink alike.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

__all__ = ["RetryPolicy", "parse_retry_after"]


def parse_retry_after(value: str | None, *, scale: float = 1.0) -> float | None:
    """Seconds from a `Retry-After` value (delta-seconds; `scale` 0.001 for `*-ms` headers).

    HTTP-dates and nonsense give None, so the caller falls back to its own backoff; hints over
    an hour are ignored as implausible.
    """
    if not value:
        return None
    try:
        seconds = float(value.strip()) * scale
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and 0 <= seconds <= 3600 else None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter and a cap, bounded by an overall deadline."""

    base: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Seconds to wait before retry `attempt` (0-based); `retry_after` wins when given."""
        if retry_after is not None:
            return retry_after + rng.uniform(0, 0.1 * max(retry_after, 1.0))
        return rng.uniform(0, min(self.cap, self.base * (2**attempt)))
