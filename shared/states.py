"""Device state between scoring batches: read from `DeviceState`, cached in memory.

A device always lands on the same Event Hubs partition, so while this worker owns that
partition its cached state is the latest. Ownership can move to another host and back; the
TTL bounds how stale a cached state can then be, and the model treats a stale state as a
fresh baseline rather than failing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

__all__ = ["StateCache", "StateStore"]


class StateStore(Protocol):
    """The part of the table store the cache needs."""

    def get_states(self, device_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        """Return each device's stored state, None when it has none."""
        ...

    def upsert_states(
        self, states: Mapping[str, dict[str, Any]], *, model_version: str, now: datetime
    ) -> None:
        """Write states back."""
        ...


class StateCache:
    """Read-through, write-through cache of device states with a time-to-live."""

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
        self._entries: dict[str, tuple[float, dict[str, Any] | None]] = {}
        self._lock = threading.Lock()

    def get_many(self, device_ids: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        """Return states for `device_ids`, reading only the missing or expired ones."""
        now = self._clock()
        out: dict[str, dict[str, Any] | None] = {}
        missing: list[str] = []
        with self._lock:
            for device_id in device_ids:
                entry = self._entries.get(device_id)
                if entry is not None and now - entry[0] < self._ttl:
                    out[device_id] = entry[1]
                else:
                    missing.append(device_id)
        if missing:
            fetched = self._store.get_states(missing)
            with self._lock:
                for device_id in missing:
                    state = fetched.get(device_id)
                    out[device_id] = state
                    self._remember(device_id, state, now)
        return out

    def put_many(
        self, states: Mapping[str, dict[str, Any]], *, model_version: str, now: datetime
    ) -> None:
        """Write states to the store, then to the cache (so a failed write is re-read)."""
        if not states:
            return
        self._store.upsert_states(states, model_version=model_version, now=now)
        stamp = self._clock()
        with self._lock:
            for device_id, state in states.items():
                self._remember(device_id, state, stamp)

    def forget(self, device_ids: Sequence[str]) -> None:
        """Drop entries, e.g. after a failed batch whose states were never written."""
        with self._lock:
            for device_id in device_ids:
                self._entries.pop(device_id, None)

    def _remember(self, device_id: str, state: dict[str, Any] | None, stamp: float) -> None:
        if len(self._entries) >= self._max and device_id not in self._entries:
            # Evict the oldest tenth; cheap and good enough for a cache this size.
            for key, _ in sorted(self._entries.items(), key=lambda kv: kv[1][0])[
                : self._max // 10 or 1
            ]:
                del self._entries[key]
        self._entries[device_id] = (stamp, state)
