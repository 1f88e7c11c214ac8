"""Shared fixtures. App settings are set before any function module is imported, as the
Functions host would set them, pointing at addresses where nothing listens."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from tests.support.aml_standin import AmlStandIn, run_aml_standin
from tests.support.conftest_azurite import (  # noqa: F401
    azurite_blobs,
    azurite_tables,
    table_store,
)

os.environ.update(
    {
        "EVENTHUB_CONNECTION": (
            "Endpoint=sb://127.0.0.1:9;SharedAccessKeyName=test;"
            "SharedAccessKey=dGVzdA==;UseDevelopmentEmulator=true"
        ),
        "TABLES_CONNECTION": (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            "AccountKey=dGVzdA==;TableEndpoint=http://127.0.0.1:9/devstoreaccount1;"
        ),
        "AML_ENDPOINT_URL": "http://127.0.0.1:9/score",
        "AML_ENDPOINT_KEY": "test-aml-key",
    }
)

NOW = datetime(2026, 11, 27, 7, 0, 0, tzinfo=UTC)


@pytest.fixture
def now() -> datetime:
    return NOW


@pytest.fixture
def aml() -> Iterator[AmlStandIn]:
    with run_aml_standin() as standin:
        yield standin
