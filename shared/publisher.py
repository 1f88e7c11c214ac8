"""Publishing events to Event Hubs, behind a seam a test can replace.

Both implementations pack events into `EventDataBatch` objects, so the in-memory stand-in keeps
the SDK's real size rule (a batch never exceeds the hub's maximum message size, 1 MiB on the
Standard tier) and splits exactly where the SDK would.

One send is one round trip to the service, and a batch sent with a partition key holds events of
that one key: a request from 100 devices was 100 sends, one after another. The real publisher
therefore resolves each device's partition on the client, with the same hash the service uses
for a partition key (the SDK's own resolver, which its buffered producer relies on), and sends
one batch per partition: at most as many sends as the hub has partitions. A device still always
lands in the same partition, in order, which is all the pipeline needs from its partition key.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Protocol

from azure.eventhub import EventData, EventDataBatch, EventHubProducerClient
from azure.eventhub.exceptions import (
    AuthenticationError,
    ConnectError,
    ConnectionLostError,
    EventDataError,
    EventHubError,
    OperationTimeoutError,
)

from .errors import PermanentError, TransientError
from .events import OutgoingEvent

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

__all__ = ["DEFAULT_MAX_BATCH_BYTES", "EventHubPublisher", "EventPublisher", "InMemoryPublisher"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH_BYTES = 1024 * 1024
# Seconds a caller should wait before retrying when the hub cannot be reached.
RETRY_AFTER_SECONDS = 5.0


class EventPublisher(Protocol):
    """Sends events; partition key order is kept per key."""

    def publish(self, events: Sequence[OutgoingEvent]) -> int:
        """Send every event; return the number of batches sent.

        Raises:
            TransientError: the hub could not be reached; nothing is known to be sent.
            PermanentError: the hub refused (authorisation, an event too large, no such hub).
        """
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def _event_data(event: OutgoingEvent) -> EventData:
    data = EventData(event.body)
    data.properties = dict(event.properties)
    return data


def pack_batches(
    events: Sequence[OutgoingEvent],
    new_batch: Callable[[str], EventDataBatch],
    group: Callable[[str], str] = lambda key: key,
) -> Iterator[tuple[EventDataBatch, list[OutgoingEvent]]]:
    """Yield full batches and their events, one `group(partition_key)` per batch, in order.

    By default a group is the partition key itself; events keep their order within a group.

    Raises:
        PermanentError: an event alone is larger than an empty batch can hold.
    """
    by_key: dict[str, list[OutgoingEvent]] = {}
    for event in events:
        by_key.setdefault(group(event.partition_key), []).append(event)
    for key, group in by_key.items():
        batch, members = new_batch(key), []
        for event in group:
            data = _event_data(event)
            try:
                batch.add(data)
            except ValueError:
                if not members:
                    raise PermanentError(
                        f"event for {key!r} is {len(event.body)} bytes, over the batch limit",
                        status=413,
                    ) from None
                yield batch, members
                batch, members = new_batch(key), []
                try:
                    batch.add(data)
                except ValueError:
                    raise PermanentError(
                        f"event for {key!r} is {len(event.body)} bytes, over the batch limit",
                        status=413,
                    ) from None
            members.append(event)
        if members:
            yield batch, members


def partition_resolver(partition_ids: Sequence[str]) -> Callable[[str], str]:
    """The partition the service would choose for a partition key, computed here.

    Uses the SDK's resolver (the service's hash of the key, modulo the partition count), the
    one its buffered producer sends with. Keys repeat (they are device ids), so answers are
    cached.
    """
    from azure.eventhub._buffered_producer._partition_resolver import PartitionResolver

    resolver = PartitionResolver(list(partition_ids))

    @lru_cache(maxsize=65_536)
    def resolve(key: str) -> str:
        # The SDK hashes `ord()` of each character; the service hashes the key's UTF-8 bytes.
        # Device ids are ASCII, where the two agree; Latin-1 makes them agree everywhere.
        return str(resolver.get_partition_id_by_partition_key(key.encode().decode("latin-1")))

    return resolve


class EventHubPublisher:
    """The real publisher: one `EventHubProducerClient`, created once and reused.

    The SDK's clients are not thread-safe and its producer sends under one lock anyway, so
    `publish` is serialised here; callers in other threads simply queue behind it. Events go
    in one batch per partition (see the module docstring); the partition list is read once,
    on the first publish (a Standard hub's partition count never changes).
    """

    def __init__(self, producer: EventHubProducerClient) -> None:
        self._producer = producer
        self._lock = threading.Lock()
        self._partition_of: Callable[[str], str] | None = None

    @classmethod
    def from_connection_string(
        cls, conn_str: str, *, eventhub_name: str | None = None, retry_total: int = 2
    ) -> EventHubPublisher:
        """Build a publisher; the client connects lazily, on the first send."""
        producer = EventHubProducerClient.from_connection_string(
            conn_str,
            eventhub_name=eventhub_name,
            retry_total=retry_total,
            retry_backoff_factor=0.5,
            retry_backoff_max=4,
        )
        return cls(producer)

    @classmethod
    def from_namespace(
        cls,
        fully_qualified_namespace: str,
        *,
        eventhub_name: str,
        credential: TokenCredential,
        retry_total: int = 2,
    ) -> EventHubPublisher:
        """Build a publisher that signs in with `credential` (a managed identity on Azure).

        No key in app settings: the identity needs "Azure Event Hubs Data Sender" on the hub
        or its namespace. The client connects lazily, on the first send.
        """
        producer = EventHubProducerClient(
            fully_qualified_namespace=fully_qualified_namespace,
            eventhub_name=eventhub_name,
            credential=credential,
            retry_total=retry_total,
            retry_backoff_factor=0.5,
            retry_backoff_max=4,
        )
        return cls(producer)

    def publish(self, events: Sequence[OutgoingEvent]) -> int:
        """Send `events` in per-partition-key batches; see `EventPublisher.publish`."""
        sent = 0
        with self._lock:
            try:
                if self._partition_of is None:
                    self._partition_of = partition_resolver(self._producer.get_partition_ids())
                for batch, _ in pack_batches(
                    events,
                    lambda pid: self._producer.create_batch(partition_id=pid),
                    self._partition_of,
                ):
                    self._producer.send_batch(batch)
                    sent += 1
            except (AuthenticationError, EventDataError) as exc:
                raise PermanentError(f"Event Hubs refused the send: {type(exc).__name__}") from exc
            except (ConnectError, ConnectionLostError, OperationTimeoutError) as exc:
                raise TransientError(
                    f"Event Hubs unreachable: {type(exc).__name__}", retry_after=RETRY_AFTER_SECONDS
                ) from exc
            except EventHubError as exc:
                raise TransientError(
                    f"Event Hubs send failed: {type(exc).__name__}", retry_after=RETRY_AFTER_SECONDS
                ) from exc
        log.debug("published %d events in %d batches", len(events), sent)
        return sent

    def close(self) -> None:
        """Close the producer's connection."""
        with self._lock:
            self._producer.close()


class InMemoryPublisher:
    """A stand-in hub that keeps the SDK's batching rule and records what was sent.

    `fail_with` makes the next publishes raise, to exercise the 503 path.
    """

    def __init__(self, *, max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES) -> None:
        self.max_batch_bytes = max_batch_bytes
        self.batches: list[list[OutgoingEvent]] = []
        self.fail_with: Exception | None = None
        self._lock = threading.Lock()

    @property
    def events(self) -> list[OutgoingEvent]:
        """Every event sent, in order."""
        return [e for batch in self.batches for e in batch]

    def publish(self, events: Sequence[OutgoingEvent]) -> int:
        """Pack like the SDK does and record each batch's events."""
        if self.fail_with is not None:
            raise self.fail_with
        sent = 0
        with self._lock:
            for _, members in pack_batches(
                events,
                lambda key: EventDataBatch(
                    max_size_in_bytes=self.max_batch_bytes, partition_key=key
                ),
            ):
                self.batches.append(members)
                sent += 1
        return sent

    def close(self) -> None:
        """Nothing to release."""
