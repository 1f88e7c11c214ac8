"""What an Event Hub trigger is: host.json's options and each binding resolved against settings.

The host resolves `%NAME%` in binding properties from app settings, reads `connection` as the
*name* of the app setting holding the connection string (also tried with the `AzureWebJobs`
prefix), lets the connection string's `EntityPath` override `eventHubName`, and keeps trigger
checkpoints in the `AzureWebJobsStorage` account. Every error names the file and the setting;
none ever carries a connection string's value.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import AppConfigError, FunctionConfig
from .retry import RetryPolicy, parse_retry_policy, parse_timespan

__all__ = [
    "DEFAULT_CHECKPOINT_CONTAINER",
    "STORAGE_API_VERSION",
    "STORAGE_SETTING",
    "EventHubFunction",
    "EventHubOptions",
    "resolve_setting_references",
    "storage_connection",
]

STORAGE_SETTING = "AzureWebJobsStorage"
DEFAULT_CHECKPOINT_CONTAINER = "azure-webjobs-eventhub"
# The storage SDKs expand this to Azurite's well-known development account (public by design).
_DEV_STORAGE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
)
# The checkpoint store's vendored blob client speaks this version; Azurite accepts it as is.
STORAGE_API_VERSION = "2019-07-07"
_SETTING_REFERENCE = re.compile(r"%([^%]+)%")
_START_POSITIONS = {"fromstart": "-1", "fromend": "@latest"}


def resolve_setting_references(text: str, environ: Mapping[str, str], *, where: str) -> str:
    """Replace each `%NAME%` with app setting NAME, as the host does for binding properties.

    Raises:
        AppConfigError: A referenced setting is missing or empty; names it.
    """

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if not environ.get(name):
            raise AppConfigError(
                f"{where}: '%{name}%' does not resolve to a value: app setting {name} is not set"
            )
        return environ[name]

    return _SETTING_REFERENCE.sub(value, text)


@dataclass(frozen=True, slots=True)
class EventHubOptions:
    """host.json `extensions.eventHubs`, with the Event Hubs extension's (5.x) defaults."""

    max_batch_size: int = 100
    max_wait_time: float | None = None  # None: deliver what is there at once
    prefetch: int = 300
    checkpoint_frequency: int = 1
    starting_position: str | datetime = "-1"

    @classmethod
    def from_host_json(cls, host_json: Mapping[str, Any], *, where: str) -> EventHubOptions:
        """Read the options; unknown keys are ignored, bad values name their key.

        Raises:
            AppConfigError: A count that is not a positive number, a bad TimeSpan or offset.
        """
        doc = (host_json.get("extensions") or {}).get("eventHubs") or {}
        here = f"{where}: extensions.eventHubs"

        def count(key: str, default: int, minimum: int) -> int:
            raw = doc.get(key, default)
            if isinstance(raw, bool) or not isinstance(raw, int) or raw < minimum:
                raise AppConfigError(f"{here}.{key} must be a whole number >= {minimum}")
            return raw

        wait = doc.get("maxWaitTime")
        return cls(
            max_batch_size=count("maxEventBatchSize", 100, 1),
            max_wait_time=None
            if wait is None
            else parse_timespan(wait, where=f"{here}.maxWaitTime"),
            prefetch=count("prefetchCount", 300, 0),
            checkpoint_frequency=count("batchCheckpointFrequency", 1, 1),
            starting_position=_starting_position(doc.get("initialOffsetOptions"), where=here),
        )


def _starting_position(doc: Any, *, where: str) -> str | datetime:
    """Where a partition without a checkpoint starts: `initialOffsetOptions`."""
    if doc is None:
        return "-1"
    kind = str(doc.get("type", "fromStart")) if isinstance(doc, Mapping) else ""
    if kind.lower() in _START_POSITIONS:
        return _START_POSITIONS[kind.lower()]
    if kind.lower() == "fromenqueuedtime":
        raw = str(doc.get("enqueuedTimeUtc") or "")
        try:
            moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:
            raise AppConfigError(
                f"{where}.initialOffsetOptions.enqueuedTimeUtc must be an ISO 8601 time with "
                f"an offset, got {raw!r}"
            )
        return moment
    raise AppConfigError(
        f"{where}.initialOffsetOptions.type must be fromStart, fromEnd or fromEnqueuedTime"
    )


def _connection_parts(text: str) -> dict[str, str]:
    return {
        k.strip().lower(): v.strip()
        for k, _, v in (p.partition("=") for p in text.split(";") if "=" in p)
    }


@dataclass(frozen=True, slots=True)
class EventHubFunction:
    """An Event Hub-triggered function with its binding resolved against the app settings."""

    name: str
    binding_name: str
    eventhub_name: str
    consumer_group: str
    connection_setting: str
    many: bool
    retry: RetryPolicy | None
    module_name: str
    entry_point: str
    connection: str = field(repr=False)  # a secret: never in reprs or logs

    @classmethod
    def from_config(
        cls,
        config: FunctionConfig,
        environ: Mapping[str, str],
        *,
        host_retry: RetryPolicy | None = None,
    ) -> EventHubFunction:
        """Read the eventHubTrigger binding and resolve its settings like the host does.

        Raises:
            AppConfigError: A missing setting (named), or a cardinality the host does not know.
        """
        where = f"{config.folder / 'function.json'}"
        trigger = config.trigger or {}
        setting = str(trigger.get("connection") or "")
        if not setting:
            raise AppConfigError(f"{where}: the eventHubTrigger binding has no 'connection'")
        # The host also looks the name up with the AzureWebJobs prefix.
        connection = environ.get(setting) or environ.get(f"AzureWebJobs{setting}") or ""
        if not connection:
            raise AppConfigError(
                f"{where}: connection {setting!r} names app setting {setting}, which is not set"
            )
        parts = _connection_parts(connection)
        if "endpoint" not in parts:
            raise AppConfigError(
                f"{where}: app setting {setting} is not an Event Hubs connection string "
                "(no Endpoint=)"
            )
        hub = resolve_setting_references(
            str(trigger.get("eventHubName") or trigger.get("path") or ""), environ, where=where
        )
        hub = parts.get("entitypath") or hub  # the connection string's hub wins, as in the host
        if not hub:
            raise AppConfigError(f"{where}: no eventHubName, and {setting} has no EntityPath")
        cardinality = str(trigger.get("cardinality") or "one").lower()
        if cardinality not in ("one", "many"):
            raise AppConfigError(f"{where}: cardinality must be 'one' or 'many'")
        retry = parse_retry_policy(_function_json_retry(config), where=where) or host_retry
        return cls(
            name=config.name,
            binding_name=str(trigger.get("name") or "event"),
            eventhub_name=hub,
            consumer_group=resolve_setting_references(
                str(trigger.get("consumerGroup") or "$Default"), environ, where=where
            ),
            connection_setting=setting,
            many=cardinality == "many",
            retry=retry,
            module_name=config.module_name,
            entry_point=config.entry_point,
            connection=connection,
        )


def _function_json_retry(config: FunctionConfig) -> Mapping[str, Any] | None:
    """function.json's `retry` object (FunctionConfig keeps only the bindings)."""
    doc = json.loads((config.folder / "function.json").read_text(encoding="utf-8-sig"))
    return doc.get("retry") if isinstance(doc, dict) else None


def storage_connection(environ: Mapping[str, str]) -> str:
    """`AzureWebJobsStorage`, with `UseDevelopmentStorage=true` expanded to Azurite's account.

    Raises:
        AppConfigError: The setting is missing.
    """
    value = environ.get(STORAGE_SETTING, "").strip()
    if not value:
        raise AppConfigError(
            f"app setting {STORAGE_SETTING} is not set; Event Hub triggers keep their "
            "checkpoints there"
        )
    if value.replace(" ", "").lower().rstrip(";") == "usedevelopmentstorage=true":
        return _DEV_STORAGE
    return value


THREADS_SETTING = "PYTHON_THREADPOOL_THREAD_COUNT"


def thread_count(environ: Mapping[str, str]) -> int:
    """Invocations a worker runs at once: Azure's `PYTHON_THREADPOOL_THREAD_COUNT` (1-32).

    Unset, it is what the Python worker uses on 3.9 and later, `ThreadPoolExecutor`'s default
    of min(32, CPUs + 4). An Event Hub trigger runs one batch per partition at a time, so a host
    holding several partitions scores them side by side, up to this many.

    Raises:
        AppConfigError: Not a whole number from 1 to 32; names the setting.
    """
    text = environ.get(THREADS_SETTING, "").strip()
    if not text:
        return min(32, (os.cpu_count() or 1) + 4)
    if not text.isdigit() or not 1 <= int(text) <= 32:
        raise AppConfigError(f"{THREADS_SETTING} must be a whole number from 1 to 32, not {text!r}")
    return int(text)
