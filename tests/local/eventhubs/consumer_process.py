"""A consumer process for the load-balancing test: the SDK's event processor with blob checkpoints.

Usage: python -m tests.local.eventhubs.consumer_process CONN BLOB_CONN CONTAINER OUT STOP
Writes `partition sequence` per event to OUT (flushed), checkpoints every event, and stops when
the file STOP exists.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from azure.eventhub import EventHubConsumerClient
from azure.eventhub.extensions.checkpointstoreblob import BlobCheckpointStore


def main(conn: str, blob_conn: str, container: str, out: str, stop: str) -> None:
    store = BlobCheckpointStore.from_connection_string(blob_conn, container)
    client = EventHubConsumerClient.from_connection_string(
        conn,
        consumer_group="$Default",
        eventhub_name="readings",
        checkpoint_store=store,
        load_balancing_interval=1,
        partition_ownership_expiration_interval=4,
    )
    lock = threading.Lock()
    with open(out, "a", buffering=1) as sink:

        def on_event(context, event) -> None:
            if event is None:
                return
            with lock:
                sink.write(f"{context.partition_id} {event.sequence_number}\n")
            context.update_checkpoint(event)

        worker = threading.Thread(
            target=client.receive,
            kwargs={"on_event": on_event, "starting_position": "-1", "max_wait_time": 1},
            daemon=True,
        )
        worker.start()
        stop_file = Path(stop)
        done = threading.Event()
        while not done.wait(0.2):  # polls for the stop file the test creates
            if stop_file.exists():
                break
        client.close()
        worker.join(10)


if __name__ == "__main__":
    main(*sys.argv[1:6])
