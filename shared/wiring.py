"""The composition root: real adapters built from settings, once per worker process.

Function modules call these at import, so a bad setting fails the worker at start-up with the
setting's name. Clients connect lazily: building them here costs no network round trip.

Event Hubs and Table Storage take a connection string when one is set, otherwise the
identity-based endpoint (`EVENTHUB_CONNECTION__fullyQualifiedNamespace`,
`TABLES_CONNECTION__tableServiceUri`) with `DefaultAzureCredential`: on Azure that is the
Function App's managed identity, locally the developer's `az login`. azure-identity is imported
only then, so the local stack (connection strings throughout) never loads it.
"""

from __future__ import annotations

import atexit
import functools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .microbatch import MicroBatcher
from .pipeline import PredictionSink, ScoringPipeline
from .publisher import EventHubPublisher, EventPublisher
from .scoring import AmlClient
from .settings import Settings, load_settings
from .states import StateCache
from .store import TableStore
from .telemetry import MeteredScorer, Metrics, configure_telemetry

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

__all__ = [
    "IngestApp",
    "ScoreApp",
    "eventhub_publisher",
    "get_credential",
    "get_settings",
    "ingest_app",
    "metrics",
    "query_store",
    "score_app",
    "table_store",
]

log = logging.getLogger(__name__)


@functools.cache
def get_settings() -> Settings:
    """Settings of this worker, validated once."""
    settings = load_settings()
    log.info("fleetscore settings loaded: %r", settings)
    return settings


@functools.cache
def get_credential() -> TokenCredential:
    """One Entra ID credential per worker, so every client shares its token cache.

    `DefaultAzureCredential` tries, in order, environment variables, workload identity and the
    managed identity (system-assigned, or the user-assigned one named by `AZURE_CLIENT_ID`)
    before developer sign-ins; constructing it makes no network call.
    """
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


def eventhub_publisher(connection: str, namespace: str, hub: str) -> EventHubPublisher:
    """A producer for `hub`: by connection string when given, else by identity on `namespace`."""
    if connection:
        return EventHubPublisher.from_connection_string(connection, eventhub_name=hub)
    return EventHubPublisher.from_namespace(
        namespace, eventhub_name=hub, credential=get_credential()
    )


def table_store(s: Settings) -> TableStore:
    """The table store the settings name: connection string first, else endpoint + identity."""
    if s.tables_connection:
        return TableStore.from_connection_string(
            s.tables_connection,
            table_prefix=s.table_prefix,
            max_workers=s.table_write_concurrency,
        )
    return TableStore.from_endpoint(
        s.tables_endpoint,
        credential=get_credential(),
        table_prefix=s.table_prefix,
        max_workers=s.table_write_concurrency,
    )


@functools.cache
def metrics() -> Metrics:
    """The worker's metrics, exported to Application Insights or summarised in the log."""
    s = get_settings()
    instruments, reporter = configure_telemetry(
        connection_string=s.applicationinsights_connection_string,
        log_interval=s.metrics_log_interval_seconds,
    )
    if reporter is not None:
        atexit.register(reporter.close)
    return instruments


@dataclass(frozen=True, slots=True)
class IngestApp:
    """What the ingest function needs."""

    publisher: EventPublisher
    metrics: Metrics | None = None


@dataclass(frozen=True, slots=True)
class ScoreApp:
    """What the score function needs."""

    pipeline: ScoringPipeline


@functools.cache
def ingest_app() -> IngestApp:
    """One producer per worker, reused by every request."""
    s = get_settings()
    return IngestApp(
        eventhub_publisher(s.eventhub_connection, s.eventhub_namespace, s.eventhub_name),
        metrics(),
    )


@functools.cache
def query_store() -> TableStore:
    """One Table client per worker, shared by the query and score functions."""
    return table_store(get_settings())


def _sinks(s: Settings, meter: Metrics | None = None) -> list[PredictionSink]:
    sinks: list[PredictionSink] = []
    if s.powerbi_enabled:
        from .powerbi import sink_from_settings

        powerbi = sink_from_settings(s)
        if meter is not None:
            meter.observe("fleetscore.powerbi.rows_dropped", lambda: powerbi.stats.rows_dropped)
        sinks.append(powerbi)
    if s.results_enabled:
        from .results import ResultsSink

        results = ResultsSink(
            eventhub_publisher(
                s.results_eventhub_connection,
                s.results_eventhub_namespace,
                s.results_eventhub_name,
            )
        )
        results.start()
        atexit.register(results.close, 5.0)
        if meter is not None:
            meter.observe(
                "fleetscore.results.predictions_dropped",
                lambda: results.stats.predictions_dropped,
            )
        sinks.append(results)
    return sinks


def micro_batcher(s: Settings, url: str, key: str, *, meter: Metrics | None = None) -> MicroBatcher:
    """The AML client and micro-batcher as the settings configure them (the bench uses it too).

    With `meter`, each AML attempt is timed and its status counted (`MeteredScorer`).
    """
    client = AmlClient(
        url,
        key,
        deployment=s.aml_deployment or None,
        timeout=s.aml_timeout_seconds,
        pool_size=s.score_max_concurrency * 2,
    )
    return MicroBatcher(
        client if meter is None else MeteredScorer(client, meter),
        max_rows=s.score_max_rows,
        max_bytes=s.score_max_bytes,
        max_concurrency=s.score_max_concurrency,
        retry_deadline=s.score_retry_deadline_seconds,
    )


@functools.cache
def score_app() -> ScoreApp:
    """The scoring pipeline with its AML client, table store, state cache and sinks."""
    s = get_settings()
    store = query_store()
    meter = metrics()
    batcher = micro_batcher(s, s.aml_endpoint_url, s.aml_endpoint_key, meter=meter)
    pipeline = ScoringPipeline(
        store=store,
        batcher=batcher,
        states=StateCache(store, ttl=s.state_cache_seconds),
        sinks=_sinks(s, meter),
        metrics=meter,
    )
    return ScoreApp(pipeline)
