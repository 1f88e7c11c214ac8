"""The Event Hubs namespace served over AMQP 1.0 to the real SDK: listener, hubs, partitions.

One asyncio task per connection (`connection.py`) reads frames and answers them in order. The
Event Hubs rules sit in `semantics` (pure) and the partitions in `log` (on disk); this module
holds what connections share: the configured hubs, the partition logs, who owns which partition,
and the wake-ups consumers wait on.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any

from .amqp.types import Long, Timestamp
from .config import EmulatorConfig, HubConfig
from .connection import MAX_MESSAGE_SIZE, _Connection, _Link
from .log import PartitionLog
from .semantics import (
    NOT_FOUND,
    EmulatorError,
    Ownership,
    partition_for_key,
    verify_sas_token,
)
from .store import HubStore

__all__ = ["DEFAULT_KEY", "DEFAULT_KEY_NAME", "EventHubsServer"]

log = logging.getLogger(__name__)

DEFAULT_KEY_NAME = "RootManageSharedAccessKey"
DEFAULT_KEY = "SAS_KEY_VALUE"


class _Signal:
    """Wakes consumer tasks when a partition grows (single event loop, no locks)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)


class EventHubsServer:
    """Serves one namespace of hubs on 127.0.0.1 until `stop()`."""

    def __init__(
        self,
        config: EmulatorConfig,
        store: HubStore,
        *,
        host: str = "127.0.0.1",
        port: int = 5672,
        key_name: str = DEFAULT_KEY_NAME,
        key: str = DEFAULT_KEY,
        clock: Callable[[], float] = time.time,
        advertised_max_message_size: int = MAX_MESSAGE_SIZE,
        retention_check_seconds: float = 60.0,
    ) -> None:
        self.config = config
        # What attach replies tell clients; the SDK sizes its batches by it. Only tests raise it
        # above the 1 MiB the server enforces, to prove the server refuses on its own.
        self.advertised_max_message_size = advertised_max_message_size
        self._retention_check = retention_check_seconds
        self._housekeeping: asyncio.Task[None] | None = None
        self.store = store
        self.host = host
        self.port = port
        self.key_name = key_name
        self._key = key
        self._clock = clock
        self._server: asyncio.base_events.Server | None = None
        self._signals: dict[tuple[str, str], _Signal] = {}
        self._ownership = Ownership()
        self._link_ids = itertools.count(1)
        self._round_robin: dict[str, int] = {}
        self._connections: set[_Connection] = set()
        self.receivers: dict[int, tuple[_Connection, _Link]] = {}

    # --- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Listen; `port` 0 picks a free port (read `self.port` after)."""
        # Opening a partition recovers its log (a CRC scan): do it here, off the event loop.
        for hub in self.config.hubs.values():
            for partition in hub.partition_ids:
                await asyncio.to_thread(self.store.partition, hub.name, partition)
            await asyncio.to_thread(self.store.created_at_ms, hub.name)
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        self._housekeeping = asyncio.get_running_loop().create_task(self._retention_loop())
        log.info("Event Hubs emulator listening on %s:%d", self.host, self.port)

    async def _retention_loop(self) -> None:
        """Each second fsync what `--fsync batch` left; now and then drop expired segments."""
        since_retention = 0.0
        while True:
            await asyncio.sleep(1.0)
            since_retention += 1.0
            try:
                await asyncio.to_thread(self.store.sync)
                if since_retention >= self._retention_check:
                    since_retention = 0.0
                    dropped = await asyncio.to_thread(self.store.apply_retention)
                    if dropped:
                        log.info("retention dropped %d expired events", dropped)
            except Exception:
                log.exception("housekeeping pass failed")

    async def stop(self) -> None:
        """Close the listener and every connection."""
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            self._housekeeping = None
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            await conn.shutdown()
        if self._server is not None:
            await self._server.wait_closed()
        self._server = None

    def connection_string(self, hub: str | None = None) -> str:
        """The string an SDK client uses to reach this emulator."""
        entity = f";EntityPath={hub}" if hub else ""
        return (
            f"Endpoint=sb://{self.host}:{self.port};SharedAccessKeyName={self.key_name};"
            f"SharedAccessKey={self._key};UseDevelopmentEmulator=true{entity}"
        )

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Connection(self, reader, writer)
        self._connections.add(conn)
        try:
            await conn.run()
        finally:
            self._connections.discard(conn)

    # --- the namespace -------------------------------------------------------------------
    def hub(self, name: str) -> HubConfig:
        """The configured hub, case-insensitively.

        Raises:
            EmulatorError: `amqp:not-found`.
        """
        hub = self.config.get_hub(name)
        if hub is None:
            raise EmulatorError(NOT_FOUND, f"The messaging entity '{name}' could not be found.")
        return hub

    def partition(self, hub: HubConfig, partition: str) -> PartitionLog:
        """The log of one partition.

        Raises:
            EmulatorError: `amqp:not-found` for a partition the hub does not have.
        """
        if partition not in list(hub.partition_ids):
            raise EmulatorError(
                NOT_FOUND,
                f"The specified partition is invalid for an EventHub partition sender or receiver."
                f" It should be between 0 and {hub.partition_count - 1}.",
            )
        return self.store.partition(hub.name, partition)

    def receiver_count(self, hub: str, consumer_group: str, partition: str) -> int:
        """Receivers attached to one partition of a consumer group (for tests and logs)."""
        return self._ownership.count((hub.lower(), consumer_group.lower(), partition))

    def signal(self, hub: HubConfig, partition: str) -> _Signal:
        """The wake-up for consumers of one partition."""
        return self._signals.setdefault((hub.name.lower(), partition), _Signal())

    def check_token(self, token: str) -> str:
        """Verify a SAS token against the namespace key; return its audience."""
        return verify_sas_token(token, key_name=self.key_name, key=self._key, now=self._clock())

    def choose_partition(self, hub: HubConfig, partition: str | None, key: str | None) -> str:
        """By id, by key (the SDK's own hash), or round robin."""
        ids = list(hub.partition_ids)
        if partition is not None:
            self.partition(hub, partition)
            return partition
        if key:
            return partition_for_key(key, ids)
        n = self._round_robin.get(hub.name, -1) + 1
        self._round_robin[hub.name] = n
        return ids[n % len(ids)]

    async def publish(
        self, hub: HubConfig, partition: str, items: list[tuple[str | None, bytes]]
    ) -> None:
        """Append durably (the fsync runs off the event loop), then wake the consumers."""
        plog = self.partition(hub, partition)
        await asyncio.to_thread(plog.append, items)
        self.signal(hub, partition).notify()

    def hub_properties(self, hub: HubConfig) -> dict[str, Any]:
        """The `$management` READ answer for a hub."""
        return {
            "name": hub.name,
            "created_at": Timestamp(self.store.created_at_ms(hub.name)),
            "partition_ids": list(hub.partition_ids),
            "type": "com.microsoft:eventhub",
        }

    def partition_properties(self, hub: HubConfig, partition: str) -> dict[str, Any]:
        """The `$management` READ answer for a partition."""
        plog = self.partition(hub, partition)
        return {
            "name": hub.name,
            "partition": partition,
            "begin_sequence_number": Long(plog.begin_sequence_number),
            "last_enqueued_sequence_number": Long(plog.last_sequence_number),
            "last_enqueued_offset": str(plog.last_offset),
            "last_enqueued_time_utc": Timestamp(plog.last_enqueued_time_ms),
            "is_partition_empty": plog.is_empty,
            "type": "com.microsoft:partition",
        }
