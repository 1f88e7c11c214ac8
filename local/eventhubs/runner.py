"""Run the emulator on its own event loop in a background thread (tests, the local stack).

The SDK's synchronous clients block the calling thread, so a test cannot share one event loop
with the server: the server gets a thread of its own, started and stopped here.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Literal, Self

from .config import EmulatorConfig, default_config
from .server import DEFAULT_KEY, DEFAULT_KEY_NAME, EventHubsServer
from .store import HubStore

__all__ = ["EmulatorThread"]


class EmulatorThread:
    """`with EmulatorThread(data_dir) as hubs: hubs.connection_string("readings")`."""

    def __init__(
        self,
        data_dir: Path,
        *,
        config: EmulatorConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        key_name: str = DEFAULT_KEY_NAME,
        key: str = DEFAULT_KEY,
        fsync: Literal["always", "batch", "never"] = "always",
        retention: timedelta = timedelta(hours=24),
        advertised_max_message_size: int | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.config = config or default_config()
        self._host = host
        self._port = port
        self._key_name = key_name
        self._key = key
        self._fsync = fsync
        self._retention = retention
        self._advertised = advertised_max_message_size
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: EventHubsServer | None = None
        self._store: HubStore | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def port(self) -> int:
        """The port the server listens on (chosen by the OS when 0 was asked)."""
        assert self._server is not None
        return self._server.port

    def connection_string(self, hub: str | None = None) -> str:
        """The connection string for the SDK, with `EntityPath` when `hub` is given."""
        assert self._server is not None
        return self._server.connection_string(hub)

    def receiver_count(self, hub: str, partition: str, consumer_group: str = "$Default") -> int:
        """Receivers attached to one partition now."""
        assert self._server is not None
        return self._server.receiver_count(hub, consumer_group, partition)

    def start(self, timeout: float = 10.0) -> None:
        """Start the loop thread and wait until the server listens."""
        self._store = HubStore(self.data_dir, fsync=self._fsync, retention=self._retention)
        extra = (
            {} if self._advertised is None else {"advertised_max_message_size": self._advertised}
        )
        self._server = EventHubsServer(
            self.config,
            self._store,
            host=self._host,
            port=self._port,
            key_name=self._key_name,
            key=self._key,
            **extra,
        )
        self._thread = threading.Thread(target=self._run, name="eventhubs-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the Event Hubs emulator did not start in time")
        if self._error is not None:
            raise RuntimeError("the Event Hubs emulator failed to start") from self._error

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        assert self._server is not None
        try:
            loop.run_until_complete(self._server.start())
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self._server.stop())
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving, close every connection and the partition logs."""
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
