"""Event Hub triggers run the way the Azure Functions host runs them, through the real SDK.

Every function whose trigger is `eventHubTrigger` gets an `azure.eventhub.EventHubConsumerClient`
with a `BlobCheckpointStore` in the `AzureWebJobsStorage` account (container
`azure-webjobs-eventhub`, as the host uses), reading `receive_batch` with host.json's
`extensions.eventHubs` options. Per batch, in the host's order:

1. **Convert.** The SDK's events become `azure.functions.EventHubEvent`s through azure-functions'
   own converter, with the metadata the host sends (`local.host.eventhub_binding`).
2. **Call.** `main(<binding name>=events)`; one log line before and one after, naming the
   function, partition, event count and sequence range, duration and outcome.
3. **Retry.** An exception applies the `retry` policy of function.json (else host.json's):
   the *same* batch is called again after the policy's delay, until it succeeds, the policy
   gives up or the host stops.
4. **Checkpoint.** Only after a successful call (every `batchCheckpointFrequency`-th one).
   A batch that failed, or was in flight when the host stopped, is never checkpointed, so a
   restarted host delivers it again; a batch the retry policy gave up on is logged as an
   error and passed over, as the host does (a later checkpoint moves past it).

Several hosts (processes or `EventHubHost`s) running the same function share the partitions
through the checkpoint store's ownership records: the SDK's load balancing, with exclusive
(owner level 0) receivers so a partition that changes hands stops at its old owner.

Differences from the host, all from the synchronous SDK: one host reads its partitions in
turn on one thread, so a batch being retried holds up that host's other partitions;
`minEventBatchSize` is not separate (a batch is delivered when `maxEventBatchSize` events are
waiting or `maxWaitTime` has passed). Connection strings never reach the logs.

This module is the host (discovery, start-up, shutdown); `eventhub_listener` runs one trigger.
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import inspect
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from azure.core.exceptions import AzureError, ResourceExistsError
from azure.eventhub.extensions.checkpointstoreblob import BlobCheckpointStore
from azure.storage.blob import ContainerClient

from . import discover_functions, is_disabled, load_host_config
from .eventhub_config import (
    DEFAULT_CHECKPOINT_CONTAINER,
    STORAGE_API_VERSION,
    STORAGE_SETTING,
    EventHubFunction,
    EventHubOptions,
    storage_connection,
    thread_count,
)
from .eventhub_listener import Checkpoint, Invocation, TriggerListener
from .retry import parse_retry_policy

__all__ = ["Checkpoint", "EventHubHost", "Invocation"]

log = logging.getLogger(__name__)

_HISTORY = 10_000


class EventHubHost:
    """The Event Hub half of a local Functions host: `start()`, `stop()`, or `with`.

    Args:
        app_root: The folder holding host.json and one folder per function.
        environ: App settings (after local.settings.json was applied); read at construction.
        functions: Run only these function names (default: every Event Hub function).
        checkpoint_container: Blob container for checkpoints and ownership (created if missing).
        load_balancing_interval: Seconds between the SDK's ownership rounds.
        ownership_expiration: Seconds after which a silent host's partitions may be taken.
        load_balancing_strategy: The SDK's `greedy` (claim a fair share at once; the default,
            so one host starts on every partition) or `balanced` (one partition per round).

    Batches of different partitions run side by side, up to `PYTHON_THREADPOOL_THREAD_COUNT`
    at once (read from `environ`), as the Python worker runs them on Azure.

    Raises:
        AppConfigError: Unreadable host.json or function.json, a missing setting (named).
    """

    def __init__(
        self,
        app_root: Path | str,
        *,
        environ: Mapping[str, str] = os.environ,
        functions: Iterable[str] | None = None,
        checkpoint_container: str = DEFAULT_CHECKPOINT_CONTAINER,
        load_balancing_interval: float = 10.0,
        ownership_expiration: float = 30.0,
        load_balancing_strategy: str = "greedy",
    ) -> None:
        self.app_root = Path(app_root).resolve()
        host_config = load_host_config(self.app_root)
        where = str(self.app_root / "host.json")
        self.options = EventHubOptions.from_host_json(host_config.raw, where=where)
        host_retry = parse_retry_policy(host_config.raw.get("retry"), where=where)
        wanted = None if functions is None else set(functions)
        self.skipped: dict[str, str] = {}
        self.functions: list[EventHubFunction] = []
        for config in discover_functions(self.app_root):
            if config.trigger_type != "eventHubTrigger" or (
                wanted is not None and config.name not in wanted
            ):
                continue
            if is_disabled(config.name, environ):
                self.skipped[config.name] = f"disabled by AzureWebJobs.{config.name}.Disabled"
                continue
            self.functions.append(
                EventHubFunction.from_config(config, environ, host_retry=host_retry)
            )
        self._storage = storage_connection(environ) if self.functions else ""
        self.threads = thread_count(environ)
        self.checkpoint_container = checkpoint_container
        self._client_options = {
            "load_balancing_interval": load_balancing_interval,
            "partition_ownership_expiration_interval": ownership_expiration,
            "load_balancing_strategy": load_balancing_strategy,
        }
        self._listeners: list[TriggerListener] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._history: collections.deque[Invocation] = collections.deque(maxlen=_HISTORY)
        self._checkpoints: collections.deque[Checkpoint] = collections.deque(maxlen=_HISTORY)
        self._added_to_path = False

    @property
    def running(self) -> list[str]:
        """Names of the functions whose listeners are running."""
        return [listener.function.name for listener in self._listeners]

    def invocations(self) -> list[Invocation]:
        """The most recent invocations (up to 10,000), oldest first."""
        with self._lock:
            return list(self._history)

    def checkpoints(self) -> list[Checkpoint]:
        """The most recent checkpoints this host wrote (up to 10,000), oldest first."""
        with self._lock:
            return list(self._checkpoints)

    def start(self) -> EventHubHost:
        """Import each function, create the checkpoint container, start one listener each.

        A function that fails to import is logged with its traceback and listed in `skipped`;
        its events stay unread (and unchecked) until a host that can run it reads them.

        Raises:
            RuntimeError: Already started.
            ConnectionError: The checkpoint container cannot be created (storage unreachable).
        """
        if self._listeners:
            raise RuntimeError("the Event Hub host is already running")
        self._stopping.clear()
        if not self.functions:
            return self
        if str(self.app_root) not in sys.path:
            sys.path.insert(0, str(self.app_root))
            self._added_to_path = True
        importlib.invalidate_caches()
        self._create_container()
        for function in self.functions:
            try:
                handler = _load(function)
            except (Exception, SystemExit) as exc:
                self.skipped[function.name] = f"failed to load: {type(exc).__name__}: {exc}"
                log.error("function %s failed to load; not listening", function.name, exc_info=True)
                continue
            listener = TriggerListener(
                function,
                handler,
                options=self.options,
                checkpoint_store=BlobCheckpointStore.from_connection_string(
                    self._storage, self.checkpoint_container
                ),
                stopping=self._stopping,
                record=self._record,
                client_options=self._client_options,
                threads=self.threads,
            )
            listener.start()
            self._listeners.append(listener)
        return self

    def stop(self, *, timeout: float = 10.0) -> None:
        """Close every consumer; an in-flight invocation finishes or is abandoned, unchecked."""
        self._stopping.set()
        deadline = time.monotonic() + timeout
        for listener in self._listeners:
            listener.stop(max(0.0, deadline - time.monotonic()))
        self._listeners = []
        if self._added_to_path:
            with contextlib.suppress(ValueError):
                sys.path.remove(str(self.app_root))
            self._added_to_path = False

    def __enter__(self) -> EventHubHost:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _create_container(self) -> None:
        """Create the checkpoint container, as the host does; fail fast if storage is away."""
        try:
            with (
                ContainerClient.from_connection_string(
                    self._storage,
                    self.checkpoint_container,
                    api_version=STORAGE_API_VERSION,
                    retry_total=2,
                ) as container,
                contextlib.suppress(ResourceExistsError),
            ):
                container.create_container()
        except AzureError as exc:
            # Say which setting; the exception's own text may quote the account's URL.
            raise ConnectionError(
                f"cannot create checkpoint container {self.checkpoint_container!r} in the "
                f"{STORAGE_SETTING} account: {type(exc).__name__}"
            ) from exc

    def _record(self, event: Invocation | Checkpoint) -> None:
        with self._lock:
            if isinstance(event, Invocation):
                self._history.append(event)
            else:
                self._checkpoints.append(event)


def _load(function: EventHubFunction) -> Callable[..., Any]:
    """Import the function's module and check that `main` takes the trigger's binding."""
    handler = getattr(importlib.import_module(function.module_name), function.entry_point)
    params = inspect.signature(handler).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return handler
    if function.binding_name not in params:
        raise TypeError(
            f"{function.entry_point}() has no parameter {function.binding_name!r} named by "
            "function.json"
        )
    required = {
        n
        for n, p in params.items()
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    if unbound := required - {function.binding_name}:
        raise TypeError(
            f"{function.entry_point}() needs {sorted(unbound)}; the local host binds only the "
            "Event Hub trigger"
        )
    return handler
