"""The partition logs of one emulated namespace, laid out on disk by hub and partition."""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from ._segment import now_ms
from .log import FsyncPolicy, LogClosedError, PartitionLog

__all__ = ["HubStore"]

log = logging.getLogger(__name__)

# The hub name rule of `config`, enforced again here because the name becomes a directory.
_SAFE_HUB = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,254}[A-Za-z0-9])?")
_SAFE_PARTITION = re.compile(r"0|[1-9][0-9]{0,8}")


class HubStore:
    """The partition logs of one namespace under `data_dir/<hub>/<partition>/`, opened lazily.

    Hub names are case-insensitive in Event Hubs, so their directories are lower-cased: `Readings`
    and `readings` share a log. Thread-safe.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        fsync: FsyncPolicy = "always",
        retention: timedelta = timedelta(hours=24),
        segment_bytes: int = 64 * 1024 * 1024,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        """Remember where and how to open logs; nothing is created until first use."""
        self.data_dir = Path(data_dir)
        self._fsync, self._retention = fsync, retention
        self._segment_bytes, self._clock = segment_bytes, clock
        self._lock = threading.Lock()
        self._logs: dict[tuple[str, str], PartitionLog] = {}
        self._created: dict[str, int] = {}
        self._closed = False

    def _hub_dir(self, hub: str) -> Path:
        if not _SAFE_HUB.fullmatch(hub):
            raise ValueError(f"not a valid event hub name: {hub!r}")
        if self._closed:
            raise LogClosedError(f"{self.data_dir}: the store is closed")
        return self.data_dir / hub.lower()

    def partition(self, hub: str, partition_id: str) -> PartitionLog:
        """The log of one partition, opened (and retention applied) on first use.

        Raises:
            ValueError: a hub name that is not a valid Event Hubs name, or a partition id that
                is not a decimal number (they become directory names).
            LogClosedError: after `close()`.
        """
        if not _SAFE_PARTITION.fullmatch(partition_id):
            raise ValueError(f"not a valid partition id: {partition_id!r}")
        with self._lock:
            key = (hub.lower(), partition_id)
            plog = self._logs.get(key)
            if plog is None:
                plog = PartitionLog(
                    self._hub_dir(hub) / partition_id,
                    fsync=self._fsync,
                    retention=self._retention,
                    segment_bytes=self._segment_bytes,
                    clock=self._clock,
                )
                plog.apply_retention()
                self._logs[key] = plog
                self._created_at_ms(hub)
            return plog

    def created_at_ms(self, hub: str) -> int:
        """When the hub was first used here, in ms since the epoch; fixed across restarts.

        Raises:
            ValueError: not a valid Event Hubs name.
            LogClosedError: after `close()`.
        """
        with self._lock:
            return self._created_at_ms(hub)

    def _created_at_ms(self, hub: str) -> int:
        folder = self._hub_dir(hub)
        if hub.lower() not in self._created:
            self._created[hub.lower()] = self._load_or_record_creation(folder)
        return self._created[hub.lower()]

    def _load_or_record_creation(self, folder: Path) -> int:
        path = folder / "hub.json"
        try:
            value = json.loads(path.read_text(encoding="utf-8"))["created_at_ms"]
            if type(value) is int:
                return value
            raise TypeError(value)
        except FileNotFoundError:
            pass
        except (ValueError, KeyError, TypeError):
            log.warning("%s: unreadable; recording a new creation time", path)
        folder.mkdir(parents=True, exist_ok=True)
        created = self._clock()
        tmp = path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            json.dump({"created_at_ms": created}, f)
            f.flush()
            if self._fsync != "never":
                os.fsync(f.fileno())
        tmp.replace(path)
        return created

    def apply_retention(self) -> int:
        """Apply retention to every open partition; return how many events were dropped."""
        with self._lock:
            logs = list(self._logs.values())
        return sum(plog.apply_retention() for plog in logs)

    def sync(self) -> None:
        """Fsync whatever "batch" left unsynced in every open partition (a timer calls this)."""
        with self._lock:
            logs = list(self._logs.values())
        for plog in logs:
            plog.sync()

    def close(self) -> None:
        """Close every partition log (waking their waiters). Idempotent."""
        with self._lock:
            self._closed = True
            logs, self._logs = list(self._logs.values()), {}
        for plog in logs:
            plog.close()
