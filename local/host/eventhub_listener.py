"""One Event Hub trigger at work: the SDK consumer, the call, its retries and the checkpoint.

`TriggerListener` runs `EventHubConsumerClient.receive_batch` on a thread of its own. Per
batch: convert (`local.host.eventhub_binding`), call, retry the same batch by the function's
policy, checkpoint after success. The SDK's synchronous processor visits its partitions one
after another; so that a host holding several partitions works on them side by side, as the
Functions host does, each batch is queued on its partition's lane and the next partition is read
while a worker thread runs it. A partition has at most one batch in process and `LANE_DEPTH`
waiting behind it, so its batches and checkpoints stay in order and memory stays bounded.
The host (`local.host.eventhub`) builds one per function and stops them all through one
`threading.Event`.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from azure.eventhub import CheckpointStore, EventData, EventHubConsumerClient

from .eventhub_binding import PartitionInfo, to_function_events
from .eventhub_config import EventHubFunction, EventHubOptions

__all__ = ["Checkpoint", "Invocation", "TriggerListener"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Invocation:
    """One call of a function with one batch: what the host logs, kept for tests and stats."""

    function: str
    partition: str
    sequence_numbers: tuple[int, ...]
    attempt: int
    succeeded: bool
    duration: float
    id: str


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A checkpoint this host wrote: the partition's last processed sequence number."""

    function: str
    partition: str
    sequence_number: int


LANE_DEPTH = 4  # batches a partition may have waiting behind the one in process


@dataclass(slots=True)
class _Lane:
    """One partition's batches: processed in order, one at a time, by one worker at a time."""

    pending: collections.deque[tuple[Any, Sequence[EventData]]] = field(
        default_factory=collections.deque
    )
    running: bool = False


class TriggerListener:
    """One function's consumer client and the thread that runs its `receive_batch`.

    Args:
        function: The resolved trigger.
        handler: The function's entry point.
        options: host.json's Event Hubs options.
        checkpoint_store: Where checkpoints and ownership records go.
        stopping: Set by the host on shutdown: no new call, no retry, no checkpoint.
        record: Called with each `Invocation` and `Checkpoint` (from the listener's thread).
        client_options: Extra `EventHubConsumerClient` keywords (load balancing).
        threads: Batches (of different partitions) in flight at once; 1 runs each batch on the
            SDK's own thread.
    """

    def __init__(
        self,
        function: EventHubFunction,
        handler: Callable[..., Any],
        *,
        options: EventHubOptions,
        checkpoint_store: CheckpointStore,
        stopping: threading.Event,
        record: Callable[[Invocation | Checkpoint], None],
        client_options: Mapping[str, Any],
        threads: int = 1,
    ) -> None:
        self.function = function
        self.handler = handler
        self.options = options
        self._stopping = stopping
        self._record = record
        self._successes: collections.Counter[str] = collections.Counter()
        self.client = EventHubConsumerClient.from_connection_string(
            function.connection,
            consumer_group=function.consumer_group,
            eventhub_name=function.eventhub_name,
            checkpoint_store=checkpoint_store,
            **client_options,
        )
        self.thread = threading.Thread(
            target=self._run, name=f"eventhub-trigger:{function.name}", daemon=True
        )
        self._workers = (
            ThreadPoolExecutor(threads, thread_name_prefix=f"invoke:{function.name}")
            if threads > 1
            else None
        )
        self._lanes: dict[str, _Lane] = {}  # partition -> its batches waiting or in process
        self._lanes_changed = threading.Condition()

    def start(self) -> None:
        """Start reading on the listener's own thread (partitions are claimed from there)."""
        options = self.options
        log.info(
            "function %s listening on event hub %s, consumer group %s (batch <= %d, wait %s, "
            "prefetch %d)",
            self.function.name,
            self.function.eventhub_name,
            self.function.consumer_group,
            options.max_batch_size,
            "none" if options.max_wait_time is None else f"{options.max_wait_time:g}s",
            options.prefetch,
        )
        self.thread.start()

    def stop(self, timeout: float) -> None:
        """Close the client and wait up to `timeout` s for the call in flight to return."""
        deadline = time.monotonic() + timeout
        self.client.close()
        self.thread.join(min(timeout, 1.0))
        while self.thread.is_alive() and time.monotonic() < deadline:
            # A close that came before `receive_batch` registered its processor misses it;
            # closing again stops a processor started since (and is harmless otherwise).
            self.client.close()
            self.thread.join(min(1.0, max(0.0, deadline - time.monotonic())))
        if self._workers is not None:
            with self._lanes_changed:
                while any(lane.running for lane in self._lanes.values()):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._lanes_changed.wait(min(left, 0.5))
            self._workers.shutdown(wait=False, cancel_futures=True)
        busy = self.thread.is_alive() or any(lane.running for lane in self._lanes.values())
        if busy:
            log.warning(
                "function %s still running after %.0fs; its batch is abandoned, not checkpointed",
                self.function.name,
                timeout,
            )

    def _run(self) -> None:
        options = self.options
        if self._stopping.is_set():
            return
        try:
            self.client.receive_batch(
                on_event_batch=self._on_batch,
                max_batch_size=options.max_batch_size,
                max_wait_time=options.max_wait_time,
                prefetch=options.prefetch,
                starting_position=options.starting_position,
                owner_level=0,
                on_error=self._on_error,
                on_partition_initialize=self._on_claimed,
                on_partition_close=self._on_released,
            )
        except Exception:
            log.exception("function %s stopped listening", self.function.name)

    def _on_claimed(self, context: Any) -> None:
        log.info("function %s claimed partition %s", self.function.name, context.partition_id)

    def _on_released(self, context: Any, reason: Any) -> None:
        log.info(
            "function %s released partition %s (%s)",
            self.function.name,
            context.partition_id,
            getattr(reason, "name", reason),
        )

    def _on_error(self, context: Any, error: Exception) -> None:
        partition = getattr(context, "partition_id", None)
        if "link:stolen" in str(error):
            # Another host claimed the partition and opened its exclusive receiver: scale-out
            # at work, not a fault.
            log.info(
                "function %s: partition %s taken over by another host",
                self.function.name,
                partition,
            )
            return
        log.warning(
            "function %s: event hub error%s: %r",
            self.function.name,
            "" if partition is None else f" on partition {partition}",
            error,
        )

    def _on_batch(self, context: Any, events: Sequence[EventData]) -> None:
        if not events or self._stopping.is_set():
            return
        if self._workers is None:
            self._process(context, events)
            return
        with self._lanes_changed:
            lane = self._lanes.setdefault(context.partition_id, _Lane())
            # A partition that is behind holds the reading thread only once its lane is full:
            # the other partitions' batches keep flowing until then, and memory stays bounded.
            while len(lane.pending) >= LANE_DEPTH and not self._stopping.is_set():
                self._lanes_changed.wait(0.5)
            if self._stopping.is_set():
                return
            lane.pending.append((context, events))
            if lane.running:
                return
            lane.running = True
        try:
            self._workers.submit(self._drain, lane)
        except RuntimeError:  # the pool was shut down: the host is stopping
            with self._lanes_changed:
                lane.running = False
                self._lanes_changed.notify_all()

    def _drain(self, lane: _Lane) -> None:
        """Process a partition's batches one after another, on a worker thread, until none wait."""
        while True:
            with self._lanes_changed:
                if not lane.pending or self._stopping.is_set():
                    lane.pending.clear()  # left unchecked: read again from the checkpoint
                    lane.running = False
                    self._lanes_changed.notify_all()
                    return
                context, events = lane.pending.popleft()
                self._lanes_changed.notify_all()
            try:
                self._process(context, events)
            except Exception:  # nobody else would see it on this thread
                log.exception(
                    "function %s: partition %s batch failed in the host; not checkpointed",
                    self.function.name,
                    context.partition_id,
                )

    def _process(self, context: Any, events: Sequence[EventData]) -> None:
        """Call with retries, then checkpoint: one batch of one partition."""
        partition = PartitionInfo(
            namespace=context.fully_qualified_namespace,
            eventhub_name=context.eventhub_name,
            consumer_group=context.consumer_group,
            partition_id=context.partition_id,
        )
        units = [events] if self.function.many else [[e] for e in events]
        if not all([self._run_with_retries(partition, unit) for unit in units]):
            return
        if self._stopping.is_set():
            log.info(
                "function %s: host stopping; partition %s batch not checkpointed",
                self.function.name,
                partition.partition_id,
            )
            return
        self._successes[partition.partition_id] += 1
        if self._successes[partition.partition_id] % self.options.checkpoint_frequency:
            return
        try:
            context.update_checkpoint(events[-1])
        except Exception as exc:
            log.warning(
                "function %s: checkpoint of partition %s failed; the next one catches up: %r",
                self.function.name,
                partition.partition_id,
                exc,
            )
            return
        self._record(
            Checkpoint(self.function.name, partition.partition_id, events[-1].sequence_number)
        )

    def _run_with_retries(self, partition: PartitionInfo, events: Sequence[EventData]) -> bool:
        """Call until it succeeds, the policy gives up or the host stops; True on success."""
        stopping, policy = self._stopping, self.function.retry
        attempt = 0
        while not stopping.is_set():
            attempt += 1
            if self._invoke(partition, events, attempt):
                return True
            delay = None if policy is None else policy.delay(attempt)
            if delay is None:
                log.error(
                    "function %s: partition %s sequence %d-%d failed %d time(s); giving up on it "
                    "(not checkpointed)",
                    self.function.name,
                    partition.partition_id,
                    events[0].sequence_number,
                    events[-1].sequence_number,
                    attempt,
                )
                return False
            log.warning(
                "function %s: retry %d of partition %s sequence %d-%d in %.3gs",
                self.function.name,
                attempt,
                partition.partition_id,
                events[0].sequence_number,
                events[-1].sequence_number,
                delay,
            )
            if stopping.wait(delay):
                break
        log.info(
            "function %s: host stopping; partition %s batch abandoned, not checkpointed",
            self.function.name,
            partition.partition_id,
        )
        return False

    def _invoke(self, partition: PartitionInfo, events: Sequence[EventData], attempt: int) -> bool:
        name, invocation_id = self.function.name, str(uuid.uuid4())
        sequences = tuple(e.sequence_number for e in events)
        log.info(
            "Executing 'Functions.%s' (Reason='event hub %s partition %s: %d event(s), "
            "sequence %d-%d, attempt %d', Id=%s)",
            name,
            partition.eventhub_name,
            partition.partition_id,
            len(events),
            sequences[0],
            sequences[-1],
            attempt,
            invocation_id,
        )
        started = time.perf_counter()
        succeeded = False
        try:
            argument = to_function_events(events, partition, many=self.function.many)
            result = self.handler(**{self.function.binding_name: argument})
            if inspect.isawaitable(result):
                asyncio.run(_await(result))
            succeeded = True
        except Exception:
            log.exception(
                "Executed 'Functions.%s' (Failed, Id=%s, Duration=%dms)",
                name,
                invocation_id,
                (time.perf_counter() - started) * 1000,
            )
        duration = time.perf_counter() - started
        if succeeded:
            log.info(
                "Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%dms)",
                name,
                invocation_id,
                duration * 1000,
            )
        self._record(
            Invocation(
                function=name,
                partition=partition.partition_id,
                sequence_numbers=sequences,
                attempt=attempt,
                succeeded=succeeded,
                duration=duration,
                id=invocation_id,
            )
        )
        return succeeded


async def _await(awaitable: Any) -> Any:
    return await awaitable
