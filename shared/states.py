"""Device state between scoring batches: read from `DeviceState`, cached in memory.

A device always lands on the same Event Hubs partition, but the partition can move to another
host (or another worker process) and back, so a cached state may be stale. Every cached state
therefore keeps the ETag it was read with, and writes are conditional on it: a write over a
row someone else changed raises `ConflictError`, the cache forgets those devices, and the
caller scores again from what is stored. The TTL only bounds memory and staleness of reads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from .errors import ConflictError

__all__ = ["StateCache", "StateSnapshot", "StateStore"]

State = dict[str, Any]


class StateStore(Protocol):
    """The part of the table store the cache needs."""

    def get_versioned_states(
        self, device_ids: Sequence[str]
    ) -> dict[str, tuple[State | None, str | None]]:
        """Return each device's stored state and its ETag (None, None when it has none)."""
        ...

    def replace_states(
        self,
        states: Mapping[str, State],
        etags: Mapping[str, str | None],
        *,
        model_version: str,
        now: datetime,
    ) -> dict[str, str]:
        """Write states where the rows are unchanged since read; return new ETags."""
        ...


@dataclass(frozen=True, slots=True)
class StateSnapshot:
    """States as read for one batch, with the ETags their write-back is conditional on."""

    states: dict[str, State | None]
    etags: dict[str, str | None]


class StateCache:
    """Read-through, conditional write-through cache of device states."""

    def __init__(
        self,
        store: StateStore,
        *,
        ttl: float = 300.0,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._entries: dict[str, tuple[float, State | None, str | None]] = {}
        self._lock = threading.Lock()

    def get_many(self, device_ids: Sequence[str]) -> StateSnapshot:
        """Return states for `device_ids`, reading only the missing or expired ones."""
        now = self._clock()
        states: dict[str, State | None] = {}
        etags: dict[str, str | None] = {}
        missing: list[str] = []
        with self._lock:
            for device_id in device_ids:
                entry = self._entries.get(device_id)
                if entry is not None and now - entry[0] < self._ttl:
                    states[device_id], etags[device_id] = entry[1], entry[2]
                else:
                    missing.append(device_id)
        if missing:
            fetched = self._store.get_versioned_states(missing)
            with self._lock:
                for device_id in missing:
                    state, etag = fetched.get(device_id, (None, None))
                    states[device_id], etags[device_id] = state, etag
                    self._remember(device_id, state, etag, now)
        return StateSnapshot(states, etags)

    def put_many(
        self,
        states: Mapping[str, State],
        snapshot: StateSnapshot,
        *,
        model_version: str,
        now: datetime,
    ) -> None:
        """Write states back, conditional on the snapshot's ETags.

        Raises:
            ConflictError: a row changed since the snapshot; those devices are forgotten.
        """
        if not states:
            return
        try:
            tags = self._store.replace_states(
                states,
                {d: snapshot.etags.get(d) for d in states},
                model_version=model_version,
                now=now,
            )
        except ConflictError:
            self.forget(list(states))
            raise
        stamp = self._clock()
        with self._lock:
            for device_id, state in states.items():
                self._remember(device_id, state, tags.get(device_id), stamp)

    def forget(self, device_ids: Sequence[str]) -> None:
        """Drop entries so the next read goes to the store."""
        with self._lock:
            for device_id in device_ids:
                self._entries.pop(device_id, None)

    def _remember(
        self, device_id: str, state: State | None, etag: str | None, stamp: float
    ) -> None:
        if len(self._entries) >= self._max and device_id not in self._entries:
            # Evict the oldest tenth; cheap and good enough for a cache this size.
            oldest = sorted(self._entries.items(), key=lambda kv: kv[1][0])[: self._max // 10 or 1]
            for key, _ in oldest:
                del self._entries[key]
        self._entries[device_id] = (stamp, state, etag)
