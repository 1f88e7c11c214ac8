"""The composition root builds identity-based clients: construction only, nothing is called."""

from __future__ import annotations

import pytest
from azure.identity import DefaultAzureCredential

from shared import wiring
from shared.settings import load_settings

AML = {
    "AML_ENDPOINT_URL": "https://fleet.westeurope.inference.ml.azure.com/score",
    "AML_ENDPOINT_KEY": "aml-secret",
}
IDENTITY = {
    **AML,
    "EVENTHUB_CONNECTION__fullyQualifiedNamespace": "fleet-ns.servicebus.windows.net",
    "TABLES_CONNECTION__tableServiceUri": "https://fleetst.table.core.windows.net",
}
EVENTHUB_CONN = (
    "Endpoint=sb://keyed-ns.servicebus.windows.net/;SharedAccessKeyName=send;"
    "SharedAccessKey=c2VjcmV0"
)
STORAGE_CONN = (
    "DefaultEndpointsProtocol=https;AccountName=keyedst;AccountKey=a2V5;"
    "EndpointSuffix=core.windows.net"
)


@pytest.fixture(autouse=True)
def _fresh_credential():
    wiring.get_credential.cache_clear()
    yield
    wiring.get_credential.cache_clear()


def test_eventhub_publisher_by_identity_uses_the_namespace_and_a_credential():
    s = load_settings(IDENTITY)
    publisher = wiring.eventhub_publisher(
        s.eventhub_connection, s.eventhub_namespace, s.eventhub_name
    )
    try:
        producer = publisher._producer
        assert producer._address.hostname == "fleet-ns.servicebus.windows.net"
        assert producer.eventhub_name == "readings"
        assert isinstance(producer._credential, DefaultAzureCredential)
        assert producer._credential is wiring.get_credential()
    finally:
        publisher.close()


def test_eventhub_publisher_connection_string_wins():
    s = load_settings({**IDENTITY, "EVENTHUB_CONNECTION": EVENTHUB_CONN})
    publisher = wiring.eventhub_publisher(
        s.eventhub_connection, s.eventhub_namespace, s.eventhub_name
    )
    try:
        producer = publisher._producer
        assert producer._address.hostname == "keyed-ns.servicebus.windows.net"
        assert not isinstance(producer._credential, DefaultAzureCredential)
    finally:
        publisher.close()


def test_table_store_by_identity_uses_the_endpoint_and_a_credential():
    store = wiring.table_store(load_settings({**IDENTITY, "TABLE_PREFIX": "fleet"}))
    try:
        service = store._service
        assert service.url == "https://fleetst.table.core.windows.net"
        assert service.account_name == "fleetst"
        assert isinstance(service.credential, DefaultAzureCredential)
        assert store.table_name("Predictions") == "fleetPredictions"
    finally:
        store.close()


def test_table_store_connection_string_wins():
    store = wiring.table_store(load_settings({**IDENTITY, "TABLES_CONNECTION": STORAGE_CONN}))
    try:
        assert store._service.account_name == "keyedst"
        assert not isinstance(store._service.credential, DefaultAzureCredential)
    finally:
        store.close()


def test_results_hub_by_identity_builds_a_producer_on_that_namespace():
    s = load_settings(
        {
            **IDENTITY,
            "RESULTS_EVENTHUB_CONNECTION__fullyQualifiedNamespace": "results.servicebus.windows.net",
        }
    )
    assert s.results_enabled
    publisher = wiring.eventhub_publisher(
        s.results_eventhub_connection, s.results_eventhub_namespace, s.results_eventhub_name
    )
    try:
        assert publisher._producer._address.hostname == "results.servicebus.windows.net"
        assert publisher._producer.eventhub_name == "predictions"
    finally:
        publisher.close()


def test_micro_batcher_times_aml_attempts_only_when_given_metrics():
    from shared.scoring import AmlClient
    from shared.telemetry import MeteredScorer, Metrics

    s = load_settings(IDENTITY)
    metrics = Metrics()
    plain = wiring.micro_batcher(s, s.aml_endpoint_url, s.aml_endpoint_key)
    metered = wiring.micro_batcher(s, s.aml_endpoint_url, s.aml_endpoint_key, meter=metrics)
    try:
        assert isinstance(plain.scorer, AmlClient)  # the bench's figures stay the client's own
        assert isinstance(metered.scorer, MeteredScorer)
        assert isinstance(metered.scorer.scorer, AmlClient)
        assert metered.scorer.metrics is metrics
    finally:
        for batcher in (plain, metered):
            batcher.close()
            batcher.scorer.close()


def test_power_bi_and_results_sinks_report_what_they_drop(monkeypatch):
    from shared.telemetry import Metrics

    s = load_settings(
        {
            **IDENTITY,
            "POWERBI_PUSH_URL": "https://api.powerbi.com/beta/t/datasets/d/rows?key=k",
            "RESULTS_EVENTHUB_CONNECTION": EVENTHUB_CONN,
        }
    )
    monkeypatch.setattr("atexit.register", lambda *a, **k: None)  # closed below instead
    metrics = Metrics()
    sinks = wiring._sinks(s, metrics)
    try:
        assert metrics.take_summary() == ""  # nothing dropped yet: no line
        assert set(metrics._observed) == {
            "fleetscore.powerbi.rows_dropped",
            "fleetscore.results.predictions_dropped",
        }
        sinks[1].stats.predictions_dropped = 5
        assert metrics.take_summary() == "results.predictions_dropped 5"
    finally:
        for sink in sinks:
            sink.close(0.1)
