"""Dead letters: accepted data that could not be scored, kept with the reason and its origin.

Poison is data, not a crash: a bad event or a device the model refuses becomes a DeadLetter
row, and the rest of its batch goes on. The id is derived from the letter's origin and payload
so that a redelivered batch overwrites its own dead letters instead of adding copies.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["DeadLetter"]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One unprocessable unit: an event body, or one device's readings as JSON."""

    payload: str
    reason: str
    source: str  # "event", "model", "store", ...
    occurred_at: datetime  # when the data entered the pipeline (enqueued time), else now
    partition: str | None = None
    offset: str | None = None
    sequence_number: int | None = None
    device_id: str | None = None

    @property
    def partition_key(self) -> str:
        """`YYYYMMDD` of `occurred_at` (UTC)."""
        return self.occurred_at.astimezone(UTC).strftime("%Y%m%d")

    @property
    def row_key(self) -> str:
        """A stable id: the same letter from a redelivered batch gets the same key."""
        digest = hashlib.sha256()
        for part in (
            self.source,
            self.partition,
            self.offset,
            self.sequence_number,
            self.device_id,
        ):
            digest.update(repr(part).encode())
            digest.update(b"\x00")
        digest.update(self.payload.encode("utf-8", "surrogatepass"))
        return digest.hexdigest()[:32]
