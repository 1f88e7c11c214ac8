"""App settings, read once at start-up into a frozen dataclass.

Every setting is declared in `SETTINGS` with its default and meaning (the README's table is
generated from the same list), so a missing or malformed value is reported by name when the
worker loads the functions, not at the first request.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError

__all__ = ["SETTINGS", "Setting", "Settings", "load_settings"]


@dataclass(frozen=True, slots=True)
class Setting:
    """One app setting: its name, default (None = required) and what it means."""

    name: str
    default: str | None
    meaning: str
    secret: bool = False
    # Functions' identity-based connection suffix that may stand in for this connection string
    # (`<NAME>__<identity>`), e.g. `fullyQualifiedNamespace`; empty = a secret is the only way.
    identity: str = ""

    @property
    def identity_name(self) -> str:
        """The identity-based setting's full name, or empty."""
        return f"{self.name}__{self.identity}" if self.identity else ""


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "EVENTHUB_CONNECTION",
        None,
        "Event Hubs connection string (ingest producer and score trigger); or, with the app's "
        "managed identity, `EVENTHUB_CONNECTION__fullyQualifiedNamespace`",
        True,
        "fullyQualifiedNamespace",
    ),
    Setting("EVENTHUB_NAME", "readings", "Event hub the readings go to"),
    Setting("EVENTHUB_CONSUMER_GROUP", "$Default", "Consumer group of the score trigger"),
    Setting(
        "TABLES_CONNECTION",
        "",
        "Table Storage connection string; or, with the managed identity, "
        "`TABLES_CONNECTION__tableServiceUri`; neither = AzureWebJobsStorage",
        True,
        "tableServiceUri",
    ),
    Setting("TABLE_PREFIX", "", "Prefix for the table names (a letter, then letters/digits)"),
    Setting(
        "TABLE_WRITE_CONCURRENCY",
        "16",
        "Table transactions in flight per worker (one per device and batch: latency, not CPU)",
    ),
    Setting("AML_ENDPOINT_URL", None, "Scoring URI of the Azure ML online endpoint"),
    Setting("AML_ENDPOINT_KEY", None, "Key of the AML endpoint (sent as a Bearer token)", True),
    Setting(
        "AML_DEPLOYMENT",
        "",
        "Pin a deployment (azureml-model-deployment header); empty = traffic split",
    ),
    Setting("AML_TIMEOUT_SECONDS", "30", "Read timeout of one scoring request"),
    Setting("SCORE_MAX_ROWS", "2000", "Most readings in one scoring request"),
    Setting("SCORE_MAX_BYTES", "1048576", "Largest scoring request body in bytes"),
    Setting(
        "SCORE_MAX_CONCURRENCY", "4", "Most scoring requests in flight per worker (cut on 429)"
    ),
    Setting(
        "SCORE_RETRY_DEADLINE_SECONDS",
        "60",
        "How long one batch retries AML before failing the invocation (at most 300)",
    ),
    Setting(
        "STATE_CACHE_SECONDS", "300", "How long a device state stays cached (writes check ETags)"
    ),
    Setting("POWERBI_API_URL", "https://api.powerbi.com", "Power BI REST API root"),
    Setting(
        "POWERBI_WORKSPACE_ID", "", "Workspace (group) of the push dataset; empty = My workspace"
    ),
    Setting("POWERBI_DATASET_ID", "", "Push dataset id; empty (and no push URL) = Power BI off"),
    Setting("POWERBI_PUSH_URL", "", "Push URL with key of a dataset made in the Power BI UI", True),
    Setting("POWERBI_INTERVAL_SECONDS", "60", "Aggregation interval of the per-device rows"),
    Setting(
        "POWERBI_WRITERS",
        "1",
        "Score hosts pushing to one dataset; each paces itself to 1/N of Power BI's limits",
    ),
    Setting("POWERBI_TENANT_ID", "", "Service principal tenant; empty = managed identity"),
    Setting("POWERBI_CLIENT_ID", "", "Service principal (or user-assigned identity) client id"),
    Setting("POWERBI_CLIENT_SECRET", "", "Service principal secret (a Key Vault reference)", True),
    Setting(
        "POWERBI_ACCESS_TOKEN",
        "",
        "Local stand-in only: a fixed bearer token instead of Entra ID; refused unless "
        "POWERBI_API_URL is on localhost",
        True,
    ),
    Setting(
        "RESULTS_EVENTHUB_CONNECTION",
        "",
        "Event Hubs connection string for predictions (Fabric Eventstream); or, with the managed "
        "identity, `RESULTS_EVENTHUB_CONNECTION__fullyQualifiedNamespace`; neither = off",
        True,
        "fullyQualifiedNamespace",
    ),
    Setting("RESULTS_EVENTHUB_NAME", "predictions", "Name of the results event hub"),
    Setting(
        "APPLICATIONINSIGHTS_CONNECTION_STRING",
        "",
        "Application Insights: metrics and structured logs export there through OpenTelemetry "
        "(the Functions host reads it too); empty = a metrics summary in the log instead",
    ),
    Setting(
        "METRICS_LOG_INTERVAL_SECONDS",
        "60",
        "Seconds between metrics summary lines in the log when Application Insights is not set; "
        "0 = none",
    ),
)

_BY_NAME = {s.name: s for s in SETTINGS}
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
_PREFIX = re.compile(r"(?:[A-Za-z][A-Za-z0-9]{0,19})?")
_GUID = re.compile(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9-]{1,63})+")
_KEY_VAULT_REFERENCE = "@microsoft.keyvault("


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the functions read from app settings, validated."""

    eventhub_connection: str
    eventhub_namespace: str
    eventhub_name: str
    eventhub_consumer_group: str
    tables_connection: str
    tables_endpoint: str
    table_prefix: str
    table_write_concurrency: int
    aml_endpoint_url: str
    aml_endpoint_key: str
    aml_deployment: str
    aml_timeout_seconds: float
    score_max_rows: int
    score_max_bytes: int
    score_max_concurrency: int
    score_retry_deadline_seconds: float
    state_cache_seconds: float
    powerbi_api_url: str
    powerbi_workspace_id: str
    powerbi_dataset_id: str
    powerbi_push_url: str
    powerbi_interval_seconds: float
    powerbi_writers: int
    powerbi_tenant_id: str
    powerbi_client_id: str
    powerbi_client_secret: str
    powerbi_access_token: str
    results_eventhub_connection: str
    results_eventhub_namespace: str
    results_eventhub_name: str
    applicationinsights_connection_string: str
    metrics_log_interval_seconds: float

    @property
    def results_enabled(self) -> bool:
        """The results hub is on when a connection string or a namespace is set."""
        return bool(self.results_eventhub_connection or self.results_eventhub_namespace)

    @property
    def powerbi_enabled(self) -> bool:
        """Power BI is on when a dataset id or a push URL is set."""
        return bool(self.powerbi_dataset_id or self.powerbi_push_url)

    def __repr__(self) -> str:
        shown = {
            s.name.lower(): (
                "***"
                if s.secret and getattr(self, s.name.lower())
                else getattr(self, s.name.lower())
            )
            for s in SETTINGS
        }
        for name in ("eventhub_namespace", "tables_endpoint", "results_eventhub_namespace"):
            shown[name] = getattr(self, name)
        return f"Settings({shown})"


def _raw(env: Mapping[str, str], name: str) -> str:
    """A setting's stripped value, or empty; an unresolved Key Vault reference is refused.

    When the platform cannot resolve `@Microsoft.KeyVault(...)` (no role on the vault, no such
    secret), the app receives the reference text itself: used as a key it would fail every
    request with a 401 instead of stopping the worker with the setting's name.
    """
    value = (env.get(name) or "").strip()
    if value.lower().startswith(_KEY_VAULT_REFERENCE):
        raise ConfigError(
            name,
            "is an unresolved Key Vault reference: grant the app's identity 'Key Vault Secrets "
            "User' on the vault and check the secret exists, then restart the app",
        )
    return value


def _text(env: Mapping[str, str], name: str) -> str:
    setting = _BY_NAME[name]
    value = _raw(env, name)
    if not value:
        if setting.default is None:
            raise ConfigError(name, f"is required ({setting.meaning})")
        return setting.default
    return value


def _number(
    env: Mapping[str, str], name: str, cast: Callable[[str], Any], low: float, high: float
) -> Any:
    raw = _text(env, name)
    try:
        value = cast(raw)
    except ValueError:
        raise ConfigError(name, f"must be a number, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(name, f"must be between {low:g} and {high:g}, got {raw!r}")
    return value


def _url(env: Mapping[str, str], name: str, *, allow_http_local: bool = True) -> str:
    raw = _text(env, name)
    if not raw:
        return raw
    parts = urlsplit(raw)
    local = parts.hostname in _LOOPBACK
    if parts.scheme != "https" and not (allow_http_local and local and parts.scheme == "http"):
        raise ConfigError(name, "must be an https:// URL (http:// only for localhost)")
    if not parts.hostname:
        raise ConfigError(name, "has no host")
    return raw


def _connection(env: Mapping[str, str], name: str, required_keys: tuple[str, ...]) -> str:
    raw = _text(env, name)
    if not raw or raw == "UseDevelopmentStorage=true":
        return raw
    keys = {p.split("=", 1)[0].strip().lower() for p in raw.split(";") if "=" in p}
    for key in required_keys:
        if key.lower() not in keys:
            raise ConfigError(name, f"is not a connection string: it has no {key}=")
    return raw


def _fully_qualified_namespace(env: Mapping[str, str], name: str) -> str:
    """`<NAME>__fullyQualifiedNamespace`: a host name such as `ns.servicebus.windows.net`."""
    raw = _raw(env, name)
    if raw and not _HOST.fullmatch(raw):
        raise ConfigError(
            name, f"must be a host name such as <namespace>.servicebus.windows.net, got {raw!r}"
        )
    return raw


def _endpoint(env: Mapping[str, str], name: str) -> str:
    """`<NAME>__tableServiceUri`: https://<account>.table.core.windows.net (http on loopback)."""
    raw = _raw(env, name)
    if not raw:
        return raw
    parts = urlsplit(raw)
    if not parts.hostname or not (
        parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK)
    ):
        raise ConfigError(name, f"must be an https:// table endpoint, got {raw!r}")
    return raw.rstrip("/")


def _eventhub(env: Mapping[str, str], name: str) -> tuple[str, str]:
    """(connection string, fully qualified namespace) of a hub; the connection string wins.

    Functions reads the trigger's `connection` the same way: `NAME` as a connection string, or
    `NAME__fullyQualifiedNamespace` with the app's managed identity.
    """
    setting = _BY_NAME[name]
    if _raw(env, name):
        return _connection(env, name, ("Endpoint",)), ""
    namespace = _fully_qualified_namespace(env, setting.identity_name)
    if not namespace and setting.default is None:
        raise ConfigError(
            name,
            f"is required: an Event Hubs connection string, or set {setting.identity_name} "
            "to connect with the app's managed identity",
        )
    return "", namespace


def _tables(env: Mapping[str, str]) -> tuple[str, str]:
    """(connection string, table endpoint): the first of five places that is set.

    `TABLES_CONNECTION`, `TABLES_CONNECTION__tableServiceUri`, then the Functions host's own
    storage: `AzureWebJobsStorage`, `AzureWebJobsStorage__tableServiceUri`,
    `AzureWebJobsStorage__accountName` (the public cloud's endpoint for that account).
    """
    conn = _connection(env, "TABLES_CONNECTION", ("AccountName",))
    if conn:
        return conn, ""
    endpoint = _endpoint(env, "TABLES_CONNECTION__tableServiceUri")
    if endpoint:
        return "", endpoint
    host = _raw(env, "AzureWebJobsStorage")
    if host:
        return host, ""
    endpoint = _endpoint(env, "AzureWebJobsStorage__tableServiceUri")
    if endpoint:
        return "", endpoint
    account = _raw(env, "AzureWebJobsStorage__accountName")
    if account:
        if not re.fullmatch(r"[a-z0-9]{3,24}", account):
            raise ConfigError("AzureWebJobsStorage__accountName", "is not a storage account name")
        return "", f"https://{account}.table.core.windows.net"
    raise ConfigError(
        "TABLES_CONNECTION",
        "is required: a connection string, or TABLES_CONNECTION__tableServiceUri for the "
        "managed identity (or set AzureWebJobsStorage / AzureWebJobsStorage__accountName)",
    )


def _local_token(env: Mapping[str, str], api_url: str) -> str:
    """A fixed Power BI token, only for a stand-in on this machine.

    A static bearer token bypasses Entra ID; against the real service it would be a secret that
    never expires, so it is refused unless the API root is loopback (the local dashboard).
    """
    token = _text(env, "POWERBI_ACCESS_TOKEN")
    if token and urlsplit(api_url).hostname not in _LOOPBACK:
        raise ConfigError(
            "POWERBI_ACCESS_TOKEN", "is for a local stand-in: POWERBI_API_URL must be localhost"
        )
    return token


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build `Settings` from `env` (default `os.environ`).

    Raises:
        ConfigError: naming the first missing or malformed setting.
    """
    env = os.environ if env is None else env
    tables, tables_endpoint = _tables(env)
    eventhub, eventhub_namespace = _eventhub(env, "EVENTHUB_CONNECTION")
    results, results_namespace = _eventhub(env, "RESULTS_EVENTHUB_CONNECTION")
    prefix = _text(env, "TABLE_PREFIX")
    if not _PREFIX.fullmatch(prefix):
        raise ConfigError(
            "TABLE_PREFIX", "must be empty or a letter then up to 19 letters and digits"
        )
    for name in (
        "POWERBI_WORKSPACE_ID",
        "POWERBI_DATASET_ID",
        "POWERBI_TENANT_ID",
        "POWERBI_CLIENT_ID",
    ):
        value = _text(env, name)
        if value and not _GUID.fullmatch(value):
            raise ConfigError(name, "must be a GUID")
    powerbi_api_url = _url(env, "POWERBI_API_URL")
    return Settings(
        eventhub_connection=eventhub,
        eventhub_namespace=eventhub_namespace,
        eventhub_name=_text(env, "EVENTHUB_NAME"),
        eventhub_consumer_group=_text(env, "EVENTHUB_CONSUMER_GROUP"),
        tables_connection=tables,
        tables_endpoint=tables_endpoint,
        table_prefix=prefix,
        table_write_concurrency=_number(env, "TABLE_WRITE_CONCURRENCY", int, 1, 64),
        aml_endpoint_url=_url(env, "AML_ENDPOINT_URL"),
        aml_endpoint_key=_text(env, "AML_ENDPOINT_KEY"),
        aml_deployment=_text(env, "AML_DEPLOYMENT"),
        aml_timeout_seconds=_number(env, "AML_TIMEOUT_SECONDS", float, 1, 180),
        score_max_rows=_number(env, "SCORE_MAX_ROWS", int, 1, 100_000),
        score_max_bytes=_number(env, "SCORE_MAX_BYTES", int, 4096, 100 * 1024 * 1024),
        score_max_concurrency=_number(env, "SCORE_MAX_CONCURRENCY", int, 1, 64),
        score_retry_deadline_seconds=_number(env, "SCORE_RETRY_DEADLINE_SECONDS", float, 0, 300),
        state_cache_seconds=_number(env, "STATE_CACHE_SECONDS", float, 0, 86_400),
        powerbi_api_url=powerbi_api_url,
        powerbi_workspace_id=_text(env, "POWERBI_WORKSPACE_ID"),
        powerbi_dataset_id=_text(env, "POWERBI_DATASET_ID"),
        powerbi_push_url=_url(env, "POWERBI_PUSH_URL"),
        powerbi_interval_seconds=_number(env, "POWERBI_INTERVAL_SECONDS", float, 1, 3600),
        powerbi_writers=_number(env, "POWERBI_WRITERS", int, 1, 100),
        powerbi_tenant_id=_text(env, "POWERBI_TENANT_ID"),
        powerbi_client_id=_text(env, "POWERBI_CLIENT_ID"),
        powerbi_client_secret=_text(env, "POWERBI_CLIENT_SECRET"),
        powerbi_access_token=_local_token(env, powerbi_api_url),
        results_eventhub_connection=results,
        results_eventhub_namespace=results_namespace,
        results_eventhub_name=_text(env, "RESULTS_EVENTHUB_NAME"),
        applicationinsights_connection_string=_text(env, "APPLICATIONINSIGHTS_CONNECTION_STRING"),
        metrics_log_interval_seconds=_number(env, "METRICS_LOG_INTERVAL_SECONDS", float, 0, 86_400),
    )
