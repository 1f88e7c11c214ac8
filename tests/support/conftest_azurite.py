"""Azurite fixtures: one emulator per test session, fresh tables per test.

Import both names into the root `tests/conftest.py`:
`from tests.support.conftest_azurite import azurite_tables, table_store  # noqa: F401`
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from azure.data.tables import TableServiceClient

from shared.store import TableStore
from tests.support.azurite import run_azurite


@pytest.fixture(scope="session")
def azurite_tables() -> Iterator[str]:
    """The connection string of an in-memory Azurite table service, up for the whole session."""
    with run_azurite() as conn:
        yield conn


@pytest.fixture(scope="session")
def azurite_blobs() -> Iterator[str]:
    """The connection string of an in-memory Azurite blob service (checkpoint stores)."""
    with run_azurite(service="blob") as conn:
        yield conn


@pytest.fixture
def table_store(azurite_tables: str) -> Iterator[TableStore]:
    """A `TableStore` on Azurite whose tables carry a prefix unique to this test."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    store = TableStore.from_connection_string(azurite_tables, table_prefix=prefix, retry_total=0)
    store.create_tables()
    try:
        yield store
    finally:
        store.close()
        with TableServiceClient.from_connection_string(azurite_tables) as service:
            for table in ("Predictions", "Anomalies", "DeadLetters"):
                service.delete_table(store.table_name(table))
