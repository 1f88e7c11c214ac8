"""Test function: a batch fails `FAILURES` times, then succeeds; one holding b"poison" never does."""

from __future__ import annotations

import collections
import threading

import azure.functions as func

FAILURES = 2
CALLS: list[tuple[int | None, ...]] = []
ATTEMPTS: collections.Counter[tuple[int | None, ...]] = collections.Counter()
LOCK = threading.Lock()


def main(batch: list[func.EventHubEvent]) -> None:
    key = tuple(event.sequence_number for event in batch)
    with LOCK:
        CALLS.append(key)
        ATTEMPTS[key] += 1
        failing = ATTEMPTS[key] <= FAILURES or any(e.get_body() == b"poison" for e in batch)
    if failing:
        raise RuntimeError(f"failing batch {key} on purpose")
