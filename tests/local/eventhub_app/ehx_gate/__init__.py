"""Test function: partition 0's batches wait (up to `GATE_S`) for another partition's batch.

With batches of different partitions side by side, partition 1's batch starts while partition
0's waits and opens the gate; a host that runs one batch at a time never gets there, and the
wait times out. `CALLS` keeps (partition, sequence numbers, whether the gate opened).
"""

from __future__ import annotations

import threading

import azure.functions as func

GATE_S = 3.0
OTHERS = threading.Event()
ZERO_STARTED = threading.Event()
CALLS: list[tuple[str, list[int], bool]] = []
LOCK = threading.Lock()


def main(events: list[func.EventHubEvent]) -> None:
    partition = str(events[0].metadata["PartitionContext"]["PartitionId"])
    opened = True
    if partition == "0":
        ZERO_STARTED.set()
        opened = OTHERS.wait(GATE_S)
    else:
        OTHERS.set()
    with LOCK:
        CALLS.append((partition, [e.sequence_number for e in events], opened))
