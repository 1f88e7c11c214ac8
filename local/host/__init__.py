"""A local Azure Functions host for a v1 (function.json) Python app.

Azure Functions Core Tools cannot be installed here, so this package plays the host's part: it
reads `host.json`, every `<app>/<name>/function.json` and `local.settings.json` the way the
host and `func start` do, and runs each function's module in this process. What an app *is*
lives here, shared by the trigger modules:

- `local.host.http`: HTTP triggers (routing, methods, `authLevel` keys, body limits);
- `local.host.eventhub`: Event Hub triggers (the SDK's consumer, blob checkpoints, retries),
  with `eventhub_config` (binding and host.json options), `eventhub_binding` (SDK events to
  `azure.functions.EventHubEvent`) and `retry` (retry policies, TimeSpans).

`python -m local.host` starts it; see `python -m local.host --help`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_ROUTE_PREFIX",
    "AppConfigError",
    "FunctionConfig",
    "HostConfig",
    "LocalSettings",
    "apply_settings",
    "discover_functions",
    "is_disabled",
    "load_host_config",
    "load_local_settings",
]

log = logging.getLogger(__name__)

DEFAULT_ROUTE_PREFIX = "api"


class AppConfigError(ValueError):
    """host.json, a function.json or local.settings.json the host could not use; names the file."""


@dataclass(frozen=True, slots=True)
class FunctionConfig:
    """One function folder: its name, its bindings and where its code is."""

    name: str
    folder: Path
    bindings: tuple[Mapping[str, Any], ...]
    script_file: str = "__init__.py"
    entry_point: str = "main"

    @property
    def trigger(self) -> Mapping[str, Any] | None:
        """The input binding whose type ends in `Trigger` (a function has exactly one)."""
        for binding in self.bindings:
            kind = str(binding.get("type", ""))
            if kind.lower().endswith("trigger") and binding.get("direction", "in") == "in":
                return binding
        return None

    @property
    def trigger_type(self) -> str | None:
        """`httpTrigger`, `eventHubTrigger`, ... or None for a folder without a trigger."""
        trigger = self.trigger
        return None if trigger is None else str(trigger["type"])

    @property
    def module_name(self) -> str:
        """What `importlib.import_module` takes, with the app root on `sys.path`.

        The v1 worker loads `scriptFile` from the function folder: `__init__.py` makes the
        folder a package named after the function; another file is a module inside it.
        """
        stem = Path(self.script_file).stem
        return self.name if stem == "__init__" else f"{self.name}.{stem}"


@dataclass(frozen=True, slots=True)
class HostConfig:
    """The parts of host.json the local host honours."""

    route_prefix: str = DEFAULT_ROUTE_PREFIX
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LocalSettings:
    """local.settings.json: `Values` become app settings; `Host` holds `LocalHttpPort`."""

    values: Mapping[str, str]
    local_http_port: int | None = None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError) as exc:
        raise AppConfigError(f"{path}: {exc}") from exc


def load_host_config(app_root: Path | str) -> HostConfig:
    """Read `<app_root>/host.json`, which marks a function app folder (Core Tools insists too).

    Raises:
        AppConfigError: host.json is missing or is not a JSON object.
    """
    path = Path(app_root) / "host.json"
    if not path.is_file():
        raise AppConfigError(f"{path}: not found; is {Path(app_root)} a function app folder?")
    doc = _read_json(path)
    if not isinstance(doc, dict):
        raise AppConfigError(f"{path}: expected a JSON object")
    http = doc.get("extensions", {}).get("http", {})
    prefix = http.get("routePrefix", DEFAULT_ROUTE_PREFIX)
    if not isinstance(prefix, str):
        raise AppConfigError(f"{path}: extensions.http.routePrefix must be a string")
    return HostConfig(route_prefix=prefix.strip("/"), raw=doc)


def discover_functions(app_root: Path | str) -> list[FunctionConfig]:
    """Every `<app_root>/*/function.json`, sorted by folder name; no function name is hard-coded.

    Raises:
        AppConfigError: A function.json is not JSON or has no `bindings` list.
    """
    found = []
    for path in sorted(Path(app_root).glob("*/function.json")):
        doc = _read_json(path)
        bindings = doc.get("bindings") if isinstance(doc, dict) else None
        if not isinstance(bindings, list) or not all(isinstance(b, dict) for b in bindings):
            raise AppConfigError(f"{path}: expected an object with a 'bindings' list")
        found.append(
            FunctionConfig(
                name=path.parent.name,
                folder=path.parent,
                bindings=tuple(bindings),
                script_file=str(doc.get("scriptFile") or "__init__.py"),
                entry_point=str(doc.get("entryPoint") or "main"),
            )
        )
    return found


def is_disabled(name: str, environ: Mapping[str, str] = os.environ) -> bool:
    """The host's switch: app setting `AzureWebJobs.<name>.Disabled` set to true (or 1)."""
    return environ.get(f"AzureWebJobs.{name}.Disabled", "").strip().lower() in ("true", "1")


def load_local_settings(path: Path | str) -> LocalSettings:
    """Read a local.settings.json file.

    Raises:
        AppConfigError: The file is missing, not JSON, encrypted, or `Values` is not an object.
    """
    path = Path(path)
    doc = _read_json(path)
    if not isinstance(doc, dict):
        raise AppConfigError(f"{path}: expected a JSON object")
    if doc.get("IsEncrypted"):
        raise AppConfigError(f"{path}: IsEncrypted is true; only plain-text settings are read")
    values = doc.get("Values", {})
    if not isinstance(values, dict):
        raise AppConfigError(f"{path}: 'Values' must be an object")
    port = (doc.get("Host") or {}).get("LocalHttpPort")
    return LocalSettings(
        values={str(k): "" if v is None else str(v) for k, v in values.items()},
        local_http_port=int(port) if port is not None else None,
    )


def apply_settings(
    values: Mapping[str, str], environ: MutableMapping[str, str] = os.environ
) -> list[str]:
    """Put settings into the environment the way `func start` does; return the names skipped.

    Like Core Tools, a variable already set to a non-empty value wins over the file. Call this
    before any function module is imported: modules read their settings at import.
    """
    skipped = []
    for name, value in values.items():
        if environ.get(name):
            skipped.append(name)
            log.info("skipping %r from local settings: already set in the environment", name)
        else:
            environ[name] = value
    return skipped
