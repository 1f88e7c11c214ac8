"""Test function: keeps every batch it is given (tests read `CALLS`)."""

from __future__ import annotations

import threading

import azure.functions as func

CALLS: list[list[func.EventHubEvent]] = []
LOCK = threading.Lock()


def main(events: list[func.EventHubEvent]) -> None:
    with LOCK:
        CALLS.append(list(events))
