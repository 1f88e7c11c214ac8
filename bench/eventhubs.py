"""Produce and consume events/s through the unmodified azure-eventhub SDK against the emulator.

    .venv/bin/python bench/eventhubs.py [--quick] [--json FILE] [--events N] [--batch N]

Everything runs on this machine: the emulator (``local.eventhubs``) in a background thread of
this process on a free 127.0.0.1 port, the SDK clients in the foreground, so the figures include
the emulator's own CPU (on 2 cores, client and server share them). One partition, ``--batch``
events per ``send_batch``, bodies of ``--body-bytes``.

``measure()`` returns the figures (see ``FIGURES``); ``main()`` prints one per line with its
unit and meaning, then one JSON line. Nothing is asserted.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Literal

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))  # for _common

from _common import bench_parser, report
from azure.eventhub import EventData, EventHubConsumerClient, EventHubProducerClient

from local.eventhubs.runner import EmulatorThread

FIGURES = {
    "eventhubs_produce_events_per_s": (
        "events/s",
        "SDK producer to the emulator, one partition, batches of 100, 400-byte bodies",
    ),
    "eventhubs_produce_cpu_us_per_event": (
        "µs CPU/event",
        "producer and emulator together (one process)",
    ),
    "eventhubs_consume_events_per_s": (
        "events/s",
        "SDK consumer (receive_batch) reading the partition back, from its first batch on",
    ),
    "eventhubs_consume_cpu_us_per_event": (
        "µs CPU/event",
        "consumer and emulator together (one process)",
    ),
}


def produce(conn: str, events: int, *, batch: int, body: bytes) -> tuple[float, float]:
    """Send ``events`` bodies to partition 0; return (wall s, CPU s) of the timed part."""
    with EventHubProducerClient.from_connection_string(conn, eventhub_name="readings") as producer:
        producer.send_batch([EventData(body)], partition_id="0")  # connect before timing
        started, cpu = time.perf_counter(), time.process_time()
        sent = 0
        while sent < events:
            data = producer.create_batch(partition_id="0")
            for _ in range(min(batch, events - sent)):
                data.add(EventData(body))
            producer.send_batch(data)
            sent += len(data)
        return time.perf_counter() - started, time.process_time() - cpu


def consume(conn: str, expected: int, *, timeout: float = 120.0) -> tuple[int, float, float]:
    """Read partition 0 from the start until ``expected`` events; return (events, wall s, CPU s).

    The clock starts when the first batch arrives, so connecting and the link's attach are not
    counted; that first batch's events are not counted either.
    """
    got = [0]
    marks: list[tuple[int, float, float]] = []  # (events so far, wall, cpu) at first and last
    done = threading.Event()
    consumer = EventHubConsumerClient.from_connection_string(
        conn, consumer_group="$Default", eventhub_name="readings"
    )

    def on_batch(context: object, events: list) -> None:
        got[0] += len(events)
        mark = (got[0], time.perf_counter(), time.process_time())
        if not marks:
            marks.append(mark)
        elif got[0] >= expected and len(marks) == 1:
            marks.append(mark)
            done.set()

    worker = threading.Thread(
        target=consumer.receive_batch,
        kwargs={
            "on_event_batch": on_batch,
            "partition_id": "0",
            "starting_position": "-1",
            "max_batch_size": 300,
            "prefetch": 600,
        },
        daemon=True,
    )
    worker.start()
    done.wait(timeout)
    consumer.close()
    worker.join(10)
    if len(marks) < 2:
        raise RuntimeError(f"consumed {got[0]} of {expected} events in {timeout} s")
    (n0, t0, c0), (n1, t1, c1) = marks
    return n1 - n0, t1 - t0, c1 - c0


def measure(
    quick: bool = False,
    *,
    events: int | None = None,
    batch: int = 100,
    body_bytes: int = 400,
    fsync: Literal["always", "batch", "never"] = "always",
) -> dict[str, float | int]:
    """Start the emulator, produce ``events`` events, consume them, stop it; return the figures.

    Args:
        quick: 5,000 events instead of 20,000.
        events: override the number of events.
        batch: events per ``send_batch``.
        body_bytes: bytes per event body.
        fsync: the emulator's log durability (``always`` is its default).
    """
    events = events or (5_000 if quick else 20_000)
    body = b"x" * body_bytes
    with (
        tempfile.TemporaryDirectory(prefix="bench-eventhubs-") as tmp,
        EmulatorThread(Path(tmp), fsync=fsync) as hubs,
    ):
        conn = hubs.connection_string()
        produce_s, produce_cpu = produce(conn, events, batch=batch, body=body)
        got, consume_s, consume_cpu = consume(conn, events + 1)  # + the warm-up event
    return {
        "eventhubs_produce_events_per_s": round(events / produce_s),
        "eventhubs_produce_cpu_us_per_event": round(produce_cpu / events * 1e6, 1),
        "eventhubs_consume_events_per_s": round(got / consume_s),
        "eventhubs_consume_cpu_us_per_event": round(consume_cpu / max(got, 1) * 1e6, 1),
    }


def main() -> None:
    """Measure and print."""
    parser = bench_parser(__doc__, "5,000 events instead of 20,000")
    parser.add_argument("--events", type=int, help="events to send")
    parser.add_argument("--batch", type=int, default=100, help="events per send_batch")
    parser.add_argument("--body-bytes", type=int, default=400, help="bytes per event body")
    parser.add_argument("--fsync", choices=["always", "batch", "never"], default="always")
    args = parser.parse_args()
    figures = measure(
        args.quick,
        events=args.events,
        batch=args.batch,
        body_bytes=args.body_bytes,
        fsync=args.fsync,
    )
    report(figures, FIGURES, args.json)


if __name__ == "__main__":
    main()
