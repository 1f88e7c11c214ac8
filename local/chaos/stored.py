"""Which readings have a Predictions row, kept up to date by reading only what is new.

The chaos run asks "is everything accepted so far stored?" every second or two. A full scan of
the table each time would grow with the run and load the very Azurite the score hosts write
to, slowing what it measures; so after one full scan only rows written since the last look
(Table Storage's `Timestamp`, set by the service) are fetched, with a margin for clock skew.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from local.demo.summary import PredictionsTable

__all__ = ["StoredRows"]

Identity = tuple[str, str]  # (device_id, Predictions RowKey)
_MARGIN = timedelta(seconds=5)  # rows written a little before the last look are read again


class StoredRows:
    """The (device, RowKey) of every Predictions row seen so far."""

    def __init__(self, connection_string: str) -> None:
        """Nothing is read until `refresh()`."""
        self._table = PredictionsTable(connection_string)
        self._since: datetime | None = None
        self.keys: set[Identity] = set()

    def refresh(self) -> set[Identity]:
        """Read what was written since the last refresh (everything, the first time)."""
        now = datetime.now(UTC)
        since = None if self._since is None else self._since - _MARGIN
        self.keys.update((r.device_id, r.row_key) for r in self._table.rows(written_since=since))
        self._since = now
        return self.keys

    def close(self) -> None:
        """Close the table client."""
        self._table.close()
