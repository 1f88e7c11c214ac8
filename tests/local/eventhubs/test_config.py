import copy
import json
from pathlib import Path
from typing import Any

import pytest

from local.eventhubs.config import (
    SHIPPED_CONFIG,
    ConfigFileError,
    EmulatorConfig,
    HubConfig,
    default_config,
    load_config,
    parse_config,
)

# Microsoft's sample Config.json (azure-event-hubs-emulator-installer), verbatim in shape.
MICROSOFT_SAMPLE: dict[str, Any] = {
    "UserConfig": {
        "NamespaceConfig": [
            {
                "Type": "EventHub",
                "Name": "emulatorNs1",
                "Entities": [
                    {"Name": "eh1", "PartitionCount": "2", "ConsumerGroups": [{"Name": "cg1"}]}
                ],
            }
        ],
        "LoggingConfig": {"Type": "File"},
    }
}


def with_change(path: list[Any], value: Any) -> dict[str, Any]:
    """The sample with the value at `path` replaced (or deleted, for `...`)."""
    doc = copy.deepcopy(MICROSOFT_SAMPLE)
    node: Any = doc
    for step in path[:-1]:
        node = node[step]
    if value is ...:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


ENTITY = ["UserConfig", "NamespaceConfig", 0, "Entities", 0]


def test_load_config_reads_the_shipped_file_as_the_default() -> None:
    config = load_config(SHIPPED_CONFIG)

    assert config == default_config()
    assert config == EmulatorConfig(
        "emulatorNs1",
        {
            "readings": HubConfig("readings", 4, ("$Default", "scoring")),
            "predictions": HubConfig("predictions", 2, ("$Default",)),
        },
    )


def test_load_config_reads_microsofts_sample(tmp_path: Path) -> None:
    path = tmp_path / "Config.json"
    path.write_text(json.dumps(MICROSOFT_SAMPLE), encoding="utf-8")

    config = load_config(path)

    assert config.namespace == "emulatorNs1"
    assert dict(config.hubs) == {"eh1": HubConfig("eh1", 2, ("$Default", "cg1"))}


def test_load_config_tolerates_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "Config.json"
    path.write_text("\ufeff" + json.dumps(MICROSOFT_SAMPLE), encoding="utf-8")

    assert load_config(path).get_hub("eh1") is not None


def test_load_config_reports_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "Config.json"
    path.write_text('{"UserConfig": ', encoding="utf-8")

    with pytest.raises(ConfigFileError, match=r"^not valid JSON: ") as caught:
        load_config(path)
    assert caught.value.field == ""


def test_parse_config_accepts_a_numeric_partition_count_and_no_groups_or_logging() -> None:
    doc = with_change([*ENTITY, "PartitionCount"], 32)
    del doc["UserConfig"]["LoggingConfig"]
    del doc["UserConfig"]["NamespaceConfig"][0]["Entities"][0]["ConsumerGroups"]

    assert parse_config(doc).hubs["eh1"] == HubConfig("eh1", 32, ("$Default",))


def test_parse_config_always_has_default_first_even_when_listed() -> None:
    doc = with_change([*ENTITY, "ConsumerGroups"], [{"Name": "b"}, {"Name": "$default"}])

    assert parse_config(doc).hubs["eh1"].consumer_groups == ("$Default", "b")


def test_hubs_are_found_case_insensitively_and_keep_their_spelling() -> None:
    doc = with_change([*ENTITY, "Name"], "Readings.EU_1")
    doc = copy.deepcopy(doc)
    doc["UserConfig"]["NamespaceConfig"][0]["Entities"][0]["ConsumerGroups"] = [{"Name": "Scoring"}]

    config = parse_config(doc)

    hub = config.get_hub("READINGS.eu_1")
    assert hub is not None
    assert hub.name == "Readings.EU_1"
    assert list(config.hubs) == ["readings.eu_1"]
    assert hub.get_consumer_group("scoring") == "Scoring"
    assert hub.get_consumer_group("$DEFAULT") == "$Default"
    assert hub.get_consumer_group("other") is None
    assert hub.partition_ids == ("0", "1")
    assert config.get_hub("missing") is None


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            [],
            ": must be a JSON object, not an array",
        ),
        (
            {},
            "UserConfig: is required",
        ),
        (
            with_change(["UserConfig", "NamespaceConfig"], {}),
            "UserConfig.NamespaceConfig: must be an array, not an object",
        ),
        (
            with_change(["UserConfig", "NamespaceConfig"], []),
            "UserConfig.NamespaceConfig: must hold exactly one namespace, not 0",
        ),
        (
            with_change(["UserConfig", "LoggingConfig", "Type"], "Syslog"),
            "UserConfig.LoggingConfig.Type: must be one of 'File', 'Console', 'File,Console',"
            " 'Console,File', not 'Syslog'",
        ),
        (
            with_change(["UserConfig", "NamespaceConfig", 0, "Type"], "ServiceBus"),
            "UserConfig.NamespaceConfig[0].Type: only 'EventHub' is supported, not 'ServiceBus'",
        ),
        (
            with_change(["UserConfig", "NamespaceConfig", 0, "Name"], "ns"),
            "UserConfig.NamespaceConfig[0].Name: 'ns' is not a valid namespace name: 6-50"
            " letters, digits or '-', starting with a letter and ending with a letter or digit",
        ),
        (
            with_change(["UserConfig", "NamespaceConfig", 0, "Entities"], []),
            "UserConfig.NamespaceConfig[0].Entities: must list at least one event hub",
        ),
        (
            with_change([*ENTITY, "Name"], "-eh1"),
            "UserConfig.NamespaceConfig[0].Entities[0].Name: '-eh1' is not a valid event hub"
            " name: 1-256 letters, digits, '.', '-' or '_', starting and ending with a letter"
            " or digit",
        ),
        (
            with_change([*ENTITY, "Name"], "e" * 257),
            "UserConfig.NamespaceConfig[0].Entities[0].Name: '" + "e" * 257 + "' is not a valid"
            " event hub name: 1-256 letters, digits, '.', '-' or '_', starting and ending with a"
            " letter or digit",
        ),
        (
            with_change([*ENTITY, "PartitionCount"], ...),
            "UserConfig.NamespaceConfig[0].Entities[0].PartitionCount: is required",
        ),
        (
            with_change([*ENTITY, "PartitionCount"], "33"),
            "UserConfig.NamespaceConfig[0].Entities[0].PartitionCount: must be 1-32, not 33",
        ),
        (
            with_change([*ENTITY, "PartitionCount"], 0),
            "UserConfig.NamespaceConfig[0].Entities[0].PartitionCount: must be 1-32, not 0",
        ),
        (
            with_change([*ENTITY, "PartitionCount"], "two"),
            "UserConfig.NamespaceConfig[0].Entities[0].PartitionCount: must be a whole number"
            " such as \"4\", not 'two'",
        ),
        (
            with_change([*ENTITY, "PartitionCount"], 2.5),
            "UserConfig.NamespaceConfig[0].Entities[0].PartitionCount: must be a string or a"
            " whole number, not a number",
        ),
        (
            with_change([*ENTITY, "PartitionCount"], True),
            "UserConfig.NamespaceConfig[0].Entities[0].PartitionCount: must be a string or a"
            " whole number, not a boolean",
        ),
        (
            with_change([*ENTITY, "ConsumerGroups"], [{"Name": "cg1"}, {"Name": "cg 2"}]),
            "UserConfig.NamespaceConfig[0].Entities[0].ConsumerGroups[1].Name: 'cg 2' is not a"
            " valid consumer group name: 1-50 letters, digits, '.', '-' or '_', starting and"
            " ending with a letter or digit",
        ),
        (
            with_change([*ENTITY, "ConsumerGroups"], [{"Name": "cg1"}, {"Name": "CG1"}]),
            "UserConfig.NamespaceConfig[0].Entities[0].ConsumerGroups[1].Name: duplicate"
            " consumer group 'CG1' (names ignore case)",
        ),
        (
            with_change([*ENTITY, "ConsumerGroups"], [{}]),
            "UserConfig.NamespaceConfig[0].Entities[0].ConsumerGroups[0].Name: is required",
        ),
        (
            with_change([*ENTITY, "ConsumerGroups"], [None]),
            "UserConfig.NamespaceConfig[0].Entities[0].ConsumerGroups[0]: must be a JSON"
            " object, not null",
        ),
        (
            with_change(
                ["UserConfig", "NamespaceConfig", 0, "Entities"],
                [{"Name": "eh1", "PartitionCount": "1"}, {"Name": "EH1", "PartitionCount": "2"}],
            ),
            "UserConfig.NamespaceConfig[0].Entities[1].Name: duplicate event hub 'EH1'"
            " (names ignore case)",
        ),
    ],
    ids=lambda v: v.split(":")[0] if isinstance(v, str) else None,
)
def test_parse_config_names_the_json_path_of_each_error(doc: Any, message: str) -> None:
    with pytest.raises(ConfigFileError) as caught:
        parse_config(doc)

    assert str(caught.value) == message.removeprefix(": ")
    assert caught.value.field == message.split(": ")[0]
