"""Ground-truth records of what the simulator did, and a JSONL writer for them.

Record shapes (JSON-ready, times as the canonical reading timestamp string; anomaly and
degradation spans are inclusive of the first and last affected reading):

- ``{"type": "anomaly", "kind": "spike|level_shift|stuck|drift|dropout|noisy_burst",
  "device_id", "metric" (null for a whole-reading dropout), "start", "end"}``
- ``{"type": "degradation", "mode": "bearing_wear|seal_leak|electrical", "device_id",
  "start", "end"}`` (end = the failure time)
- ``{"type": "failure", "device_id", "time"}`` and ``{"type": "maintenance", "device_id", "time"}``
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO

__all__ = ["TruthWriter", "format_time"]


def format_time(t: datetime) -> str:
    """Return ``t`` as the contract's canonical ``YYYY-MM-DDTHH:MM:SS.fffZ`` string."""
    t = t.astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


class TruthWriter:
    """Append ground-truth records to a JSONL file, one per line, flushed per write.

    Flushing each batch means a run killed half-way still leaves every record it reported.
    """

    def __init__(self, path: str | Path) -> None:
        """Open (truncate) ``path`` for writing."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] = self.path.open("w", encoding="utf-8")
        self.count = 0

    def write(self, records: Iterable[dict]) -> None:
        """Write ``records`` and flush."""
        lines = [json.dumps(r, separators=(",", ":")) + "\n" for r in records]
        if lines:
            self._fh.writelines(lines)
            self._fh.flush()
            self.count += len(lines)

    def close(self) -> None:
        """Close the file."""
        self._fh.close()

    def __enter__(self) -> TruthWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
