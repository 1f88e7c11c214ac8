"""The real app under the local host on a free port, with in-memory Event Hubs and Table Storage.

Module-scoped, so hypothesis runs many examples against one host; the function modules' adapters
are swapped back when the module's tests end.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, settings

import ingest_function
import query_function
from local.host.http import HttpHost
from shared.publisher import InMemoryPublisher
from shared.store import InMemoryTableStore
from shared.wiring import IngestApp

ROOT = Path(__file__).resolve().parents[2]
KEY = "api-fuzz-test-key-0123456789"
FUZZ_EXAMPLES_ENV = "FLEETSCORE_FUZZ_EXAMPLES"


def fuzz_settings(default: int) -> settings:
    """Hypothesis settings: `default` examples in `make test`, FLEETSCORE_FUZZ_EXAMPLES for chaos.

    No deadline: a request's time is the host's, not a property of the input. The short run is
    derandomised, so `make test` sees the same cases every time; the long run explores.
    """
    examples = os.environ.get(FUZZ_EXAMPLES_ENV)
    return settings(
        max_examples=int(examples or default),
        derandomize=not examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.fixture(scope="module")
def hub() -> Iterator[InMemoryPublisher]:
    """The ingest function publishing into memory (Event Hubs always up)."""
    publisher = InMemoryPublisher()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ingest_function, "_app", IngestApp(publisher))
        yield publisher


@pytest.fixture(scope="module")
def store() -> Iterator[InMemoryTableStore]:
    """The query function reading an in-memory store with the four tables created."""
    tables = InMemoryTableStore()
    tables.create_tables()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(query_function, "_store", tables)
        yield tables


@pytest.fixture(scope="module")
def host(hub: InMemoryPublisher, store: InMemoryTableStore) -> Iterator[HttpHost]:
    """The repo's own functions behind the local host, on 127.0.0.1 and a free port."""
    with HttpHost(ROOT, keys=[KEY], port=0) as running:
        yield running


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    """One keep-alive session for every request of a module."""
    with requests.Session() as session:
        yield session
