"""Produce and consume events/s through the unmodified azure-eventhub SDK against the emulator.

    .venv/bin/python bench/eventhubs.py [--events 20000] [--batch 100] [--body-bytes 400]

Prints one figure per line and a JSON line at the end. Everything runs on this machine: the
emulator in a background thread of this process, the SDK clients in the foreground, so the
figures include the emulator's own CPU (on 2 cores, client and server share them).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from azure.eventhub import EventData, EventHubConsumerClient, EventHubProducerClient

from local.eventhubs.runner import EmulatorThread


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events to send (default 20000)")
    parser.add_argument(
        "--batch", type=int, default=100, help="events per send_batch (default 100)"
    )
    parser.add_argument(
        "--body-bytes", type=int, default=400, help="bytes per event body (default 400)"
    )
    parser.add_argument("--fsync", choices=["always", "batch", "never"], default="always")
    args = parser.parse_args()

    body = b"x" * args.body_bytes
    with tempfile.TemporaryDirectory() as tmp, EmulatorThread(Path(tmp), fsync=args.fsync) as hubs:
        with EventHubProducerClient.from_connection_string(
            hubs.connection_string(), eventhub_name="readings"
        ) as producer:
            producer.send_batch([EventData(body)], partition_id="0")  # connect before timing
            started = time.perf_counter()
            cpu = time.process_time()
            sent = 0
            while sent < args.events:
                batch = producer.create_batch(partition_id="0")
                for _ in range(min(args.batch, args.events - sent)):
                    batch.add(EventData(body))
                producer.send_batch(batch)
                sent += len(batch)
                if sent % (args.batch * 50) == 0:
                    print(f"  sent {sent}/{args.events}", file=sys.stderr)
            produce_s = time.perf_counter() - started
            produce_cpu = time.process_time() - cpu

        got = [0]
        done = threading.Event()
        consumer = EventHubConsumerClient.from_connection_string(
            hubs.connection_string(), consumer_group="$Default", eventhub_name="readings"
        )

        def on_batch(context: object, events: list) -> None:
            got[0] += len(events)
            if got[0] >= args.events + 1:
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
        started = time.perf_counter()
        cpu = time.process_time()
        worker.start()
        done.wait(600)
        consume_s = time.perf_counter() - started
        consume_cpu = time.process_time() - cpu
        consumer.close()
        worker.join(10)

    result = {
        "events": args.events,
        "batch": args.batch,
        "body_bytes": args.body_bytes,
        "fsync": args.fsync,
        "produce_events_per_s": round(args.events / produce_s),
        "produce_cpu_us_per_event": round(produce_cpu / args.events * 1e6, 1),
        "consume_events_per_s": round(got[0] / consume_s),
        "consume_cpu_us_per_event": round(consume_cpu / max(got[0], 1) * 1e6, 1),
        "consumed": got[0],
    }
    for hop in ("produce", "consume"):
        print(
            f"{hop}: {result[hop + '_events_per_s']} events/s"
            f" ({result[hop + '_cpu_us_per_event']} µs CPU/event, client and server together)"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
