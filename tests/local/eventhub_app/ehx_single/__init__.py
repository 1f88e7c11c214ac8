"""Test function with the default cardinality (one): keeps every event it is given."""

from __future__ import annotations

import threading

import azure.functions as func

CALLS: list[func.EventHubEvent] = []
LOCK = threading.Lock()


def main(event: func.EventHubEvent) -> None:
    with LOCK:
        CALLS.append(event)
