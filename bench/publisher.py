"""The ingest's publish: one batch per partition against one batch per device, in one run.

    .venv/bin/python bench/publisher.py [--quick] [--json FILE]

Each request of the simulator carries readings of many devices, and the ingest publishes one
event per device. Sending them in batches by partition key (what the publisher did first) costs
one round trip per device; resolving each device's partition on the client and sending one batch
per partition costs at most one per partition. Both run here against the Event Hubs emulator
(in this process, fsync on every append, as acknowledged events must be durable), through the
real `EventHubPublisher` and the unmodified SDK.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))  # for _common

from _common import bench_parser, emit_json

from local.eventhubs.runner import EmulatorThread
from shared.events import OutgoingEvent
from shared.publisher import EventHubPublisher, pack_batches

DEVICES = 100


class PerKeyPublisher(EventHubPublisher):
    """The first publisher: one batch per partition key (per device)."""

    def publish(self, events: Sequence[OutgoingEvent]) -> int:
        """One `send_batch` per device."""
        sent = 0
        with self._lock:
            for batch, _ in pack_batches(
                events, lambda key: self._producer.create_batch(partition_key=key)
            ):
                self._producer.send_batch(batch)
                sent += 1
        return sent


def _request(n: int) -> list[OutgoingEvent]:
    body = b'{"schema":1,"readings":[' + b'{"timestamp":"x","metrics":{"t":1.0}},' * 2 + b"{}]}"
    return [OutgoingEvent(f"pump-{d:04d}", body, {"schema": 1, "n": n}) for d in range(DEVICES)]


def _rate(publisher: EventHubPublisher, requests: int) -> tuple[float, float]:
    """Requests/s and client CPU µs per event, after one warm-up request."""
    publisher.publish(_request(-1))
    started, cpu = time.perf_counter(), time.process_time()
    for n in range(requests):
        publisher.publish(_request(n))
    wall, used = time.perf_counter() - started, time.process_time() - cpu
    return requests / wall, used / (requests * DEVICES) * 1e6


def measure(quick: bool = False) -> dict[str, float]:
    """Both ways against one emulator; requests of 100 devices' events."""
    requests = 20 if quick else 100
    with tempfile.TemporaryDirectory() as tmp, EmulatorThread(Path(tmp)) as hubs:
        conn = hubs.connection_string()
        per_key = PerKeyPublisher.from_connection_string(conn, eventhub_name="readings")
        per_partition = EventHubPublisher.from_connection_string(conn, eventhub_name="readings")
        try:
            key_rate, key_cpu = _rate(per_key, max(5, requests // 5))
            part_rate, part_cpu = _rate(per_partition, requests)
        finally:
            per_key.close()
            per_partition.close()
    return {
        "publish_per_device_batches_requests_per_s": round(key_rate, 1),
        "publish_per_partition_batches_requests_per_s": round(part_rate, 1),
        "publish_per_partition_vs_per_device_ratio": round(part_rate / key_rate, 1),
        "publish_per_device_batches_cpu_us_per_event": round(key_cpu, 1),
        "publish_per_partition_batches_cpu_us_per_event": round(part_cpu, 1),
    }


def main(argv: list[str] | None = None) -> None:
    """Run and print the figures, then one JSON line."""
    args = bench_parser(__doc__, "fewer requests (~10 s)").parse_args(argv)
    figures = measure(quick=args.quick)
    print(f"requests of {DEVICES} devices' events each, to the emulator (fsync always):")
    for key, value in figures.items():
        print(f"  {key}: {value}")
    emit_json(figures, args.json)


if __name__ == "__main__":
    main()
