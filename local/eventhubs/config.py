"""The emulated namespace's hubs, read from a `Config.json` in the shape of Microsoft's emulator.

Microsoft's Event Hubs emulator is configured by a JSON file (its schema is
`EventHub-Emulator/Schema/Config-schema.json` in Azure/azure-event-hubs-emulator-installer):

    {"UserConfig": {
        "NamespaceConfig": [{"Type": "EventHub", "Name": "emulatorNs1", "Entities": [
            {"Name": "eh1", "PartitionCount": "2", "ConsumerGroups": [{"Name": "cg1"}]}]}],
        "LoggingConfig": {"Type": "File"}}}

Reading the same shape lets users bring the file they already have. Every file Microsoft's
emulator accepts is accepted here; the differences all go the lenient way: `PartitionCount`
may be a number as well as a string; `ConsumerGroups` and `LoggingConfig` may be left out;
listing `$Default` is allowed (it exists either way); the namespace may have any valid name, not
only `emulatorNs1`; there is no 10-hub cap. `LoggingConfig` is checked but ignored (this
emulator logs through `logging`). Unknown keys are ignored, as the schema allows.

Names follow the service's rules: a hub is 1-256 letters, digits, `.`, `-` or `_`, starting
and ending with a letter or digit; a consumer group the same in 1-50; a namespace 6-50 letters,
digits or `-`, starting with a letter and ending with a letter or digit. Names are compared
case-insensitively (as the service does) and keep their configured spelling.

Every error names the JSON path of the offending value, e.g.
`UserConfig.NamespaceConfig[0].Entities[1].PartitionCount: must be 1-32, not 40`.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

__all__ = [
    "DEFAULT_CONSUMER_GROUP",
    "MAX_PARTITIONS",
    "SHIPPED_CONFIG",
    "ConfigFileError",
    "EmulatorConfig",
    "HubConfig",
    "default_config",
    "load_config",
    "parse_config",
]

log = logging.getLogger(__name__)

DEFAULT_CONSUMER_GROUP = "$Default"
MAX_PARTITIONS = 32
SHIPPED_CONFIG = Path(__file__).with_name("Config.json")
"""fleetscore's own configuration, in Microsoft's shape (equal to `default_config()`)."""

_LETTERS_DIGITS = "letters, digits, '.', '-' or '_', starting and ending with a letter or digit"
_NAME_RULES: dict[str, tuple[re.Pattern[str], str]] = {
    "namespace": (
        re.compile(r"[A-Za-z][A-Za-z0-9-]{4,48}[A-Za-z0-9]"),
        "6-50 letters, digits or '-', starting with a letter and ending with a letter or digit",
    ),
    "event hub": (
        re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,254}[A-Za-z0-9])?"),
        f"1-256 {_LETTERS_DIGITS}",
    ),
    "consumer group": (
        re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,48}[A-Za-z0-9])?"),
        f"1-50 {_LETTERS_DIGITS}",
    ),
}
_LOGGING_TYPES = ("File", "Console", "File,Console", "Console,File")


class ConfigFileError(ValueError):
    """A configuration the emulator cannot use; `field` is the JSON path of the bad value."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


@dataclass(frozen=True, slots=True)
class HubConfig:
    """One event hub: its name as configured, its partitions and its consumer groups."""

    name: str
    partition_count: int
    consumer_groups: tuple[str, ...] = (DEFAULT_CONSUMER_GROUP,)
    """Always starts with `$Default`."""

    @property
    def partition_ids(self) -> tuple[str, ...]:
        """The partition ids as the service names them: `"0"` to `"<count - 1>"`."""
        return tuple(str(i) for i in range(self.partition_count))

    def get_consumer_group(self, name: str) -> str | None:
        """The configured spelling of consumer group `name` (case-insensitive), or None."""
        return next((g for g in self.consumer_groups if g.lower() == name.lower()), None)


@dataclass(frozen=True, slots=True)
class EmulatorConfig:
    """The namespace and its hubs, keyed by lower-cased name (hub names are case-insensitive)."""

    namespace: str
    hubs: Mapping[str, HubConfig] = field(default_factory=lambda: MappingProxyType({}))

    def get_hub(self, name: str) -> HubConfig | None:
        """The hub called `name`, compared case-insensitively, or None."""
        return self.hubs.get(name.lower())


def default_config() -> EmulatorConfig:
    """The hubs fleetscore uses: `readings` (4 partitions, `scoring` group), `predictions` (2).

    The same as the shipped `Config.json` (a test holds them equal), so the emulator runs
    without a file.
    """
    hubs = [
        HubConfig("readings", 4, (DEFAULT_CONSUMER_GROUP, "scoring")),
        HubConfig("predictions", 2),
    ]
    return _config("emulatorNs1", hubs, where="default")


def load_config(path: Path) -> EmulatorConfig:
    """Read and validate a `Config.json` file.

    Raises:
        ConfigFileError: not JSON, or a value breaks a rule (the error names its JSON path).
        OSError: the file cannot be read.
    """
    text = Path(path).read_text(encoding="utf-8-sig")  # tolerate a BOM (Windows editors)
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigFileError("", f"not valid JSON: {exc}") from exc
    config = parse_config(document)
    log.info("%s: namespace %s, hubs %s", path, config.namespace, ", ".join(config.hubs))
    return config


def parse_config(document: Any) -> EmulatorConfig:
    """Validate a decoded `Config.json` document and build the configuration from it.

    Raises:
        ConfigFileError: the first value that breaks a rule, named by its JSON path.
    """
    user = _member(_object(document, ""), "UserConfig", "", dict)
    if "LoggingConfig" in user:
        at = "UserConfig.LoggingConfig"
        kind = _member(_object(user["LoggingConfig"], at), "Type", at, str)
        if kind not in _LOGGING_TYPES:
            allowed = ", ".join(repr(t) for t in _LOGGING_TYPES)
            raise ConfigFileError(f"{at}.Type", f"must be one of {allowed}, not {kind!r}")
    namespaces = _member(user, "NamespaceConfig", "UserConfig", list)
    if len(namespaces) != 1:
        raise ConfigFileError(
            "UserConfig.NamespaceConfig", f"must hold exactly one namespace, not {len(namespaces)}"
        )
    at = "UserConfig.NamespaceConfig[0]"
    namespace = _object(namespaces[0], at)
    kind = _member(namespace, "Type", at, str)
    if kind != "EventHub":
        raise ConfigFileError(f"{at}.Type", f"only 'EventHub' is supported, not {kind!r}")
    name = _name(namespace, at, "namespace")
    entities = _member(namespace, "Entities", at, list)
    if not entities:
        raise ConfigFileError(f"{at}.Entities", "must list at least one event hub")
    hubs = [_hub(entity, f"{at}.Entities[{i}]") for i, entity in enumerate(entities)]
    return _config(name, hubs, where=f"{at}.Entities")


def _config(namespace: str, hubs: list[HubConfig], *, where: str) -> EmulatorConfig:
    by_name: dict[str, HubConfig] = {}
    for i, hub in enumerate(hubs):
        if hub.name.lower() in by_name:
            raise ConfigFileError(
                f"{where}[{i}].Name", f"duplicate event hub {hub.name!r} (names ignore case)"
            )
        by_name[hub.name.lower()] = hub
    return EmulatorConfig(namespace, MappingProxyType(by_name))


def _hub(entity: Any, at: str) -> HubConfig:
    entity = _object(entity, at)
    name = _name(entity, at, "event hub")
    count = _partition_count(
        _member(entity, "PartitionCount", at, (str, int)), f"{at}.PartitionCount"
    )
    groups = [DEFAULT_CONSUMER_GROUP]
    for i, item in enumerate(_member(entity, "ConsumerGroups", at, list, default=[])):
        group_at = f"{at}.ConsumerGroups[{i}]"
        group = _member(_object(item, group_at), "Name", group_at, str)
        if group.lower() == DEFAULT_CONSUMER_GROUP.lower():
            continue  # Microsoft's emulator refuses to list it; it exists anyway, so allow it
        group = _name(item, group_at, "consumer group")
        if any(g.lower() == group.lower() for g in groups):
            raise ConfigFileError(
                f"{group_at}.Name", f"duplicate consumer group {group!r} (names ignore case)"
            )
        groups.append(group)
    return HubConfig(name, count, tuple(groups))


def _name(obj: dict[str, Any], at: str, kind: str) -> str:
    """The `Name` member of `obj`, checked against the service's rule for a `kind`."""
    name = _member(obj, "Name", at, str)
    pattern, rule = _NAME_RULES[kind]
    if not pattern.fullmatch(name):
        raise ConfigFileError(f"{at}.Name", f"{name!r} is not a valid {kind} name: {rule}")
    return name


def _partition_count(value: str | int, at: str) -> int:
    if isinstance(value, str) and not re.fullmatch(r"\s*[0-9]+\s*", value):
        raise ConfigFileError(at, f'must be a whole number such as "4", not {value!r}')
    count = int(value)
    if not 1 <= count <= MAX_PARTITIONS:
        raise ConfigFileError(at, f"must be 1-{MAX_PARTITIONS}, not {count}")
    return count


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigFileError(where, f"must be a JSON object, not {_json_type(value)}")
    return value


def _member(
    obj: dict[str, Any], key: str, where: str, kind: type | tuple[type, ...], *, default: Any = None
) -> Any:
    path = f"{where}.{key}" if where else key
    if key not in obj:
        if default is not None:
            return default
        raise ConfigFileError(path, "is required")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        kinds = kind if isinstance(kind, tuple) else (kind,)
        wanted = " or ".join(_JSON_TYPES[k] for k in kinds)
        raise ConfigFileError(path, f"must be {wanted}, not {_json_type(value)}")
    return value


_JSON_TYPES: dict[type, str] = {
    dict: "an object",
    list: "an array",
    str: "a string",
    int: "a whole number",
}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return _JSON_TYPES.get(type(value), "a number")
