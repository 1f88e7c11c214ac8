"""Device state between scoring batches: a row beside the device's predictions, cached in memory.

The state row lives in the device's own `Predictions` partition (RowKey `state`), so it is
written in the same transaction as the predictions it produced: both land, or neither does,
and it costs one more entity in a request the predictions make anyway, instead of a request
of its own per device per batch.

A device always lands on the same Event Hubs partition, but the partition can move to another
host (or another worker process) and back, so a cached state may be stale. Every cached state
therefore keeps the ETag it was read with, and writes are conditional on it: a transaction over
a state row someone else changed is refused whole, the cache forgets that device, and the
caller scores it again from what is stored. The TTL only bounds memory and staleness of reads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .predictions import Prediction

__all__ = ["DeviceWrite", "StateCache", "StateSnapshot", "StateStore", "Written"]

State = dict[str, Any]


class StateStore(Protocol):
    """The part of the table store the cache needs."""

    def get_versioned_states(
        self, device_ids: Sequence[str]
    ) -> dict[str, tuple[State | None, str | None]]:
        """Return each device's stored state and its ETag (None, None when it has none)."""
        ...


@dataclass(frozen=True, slots=True)
class DeviceWrite:
    """One device's scored readings: its predictions and its next state, stored together."""

    device_id: str
    predictions: Sequence[Prediction]
    state: State
    etag: str | None  # the ETag the state was read with; None: the device had no state row


@dataclass(slots=True)
class Written:
    """What a `write_devices` call did, device by device."""

    etags: dict[str, str | None] = field(default_factory=dict)  # stored: the state's new ETag
    conflicts: list[str] = field(default_factory=list)  # state changed since read: not stored
    refused: dict[str, str] = field(default_factory=dict)  # refused for good: the reason
    error: Exception | None = None  # the first transient failure: devices in none of the above


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

    def remember(self, states: Mapping[str, State], etags: Mapping[str, str | None]) -> None:
        """Keep states just stored; one whose new ETag is unknown is forgotten instead."""
        stamp = self._clock()
        with self._lock:
            for device_id, etag in etags.items():
                if etag is None:
                    self._entries.pop(device_id, None)
                else:
                    self._remember(device_id, states[device_id], etag, stamp)

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
