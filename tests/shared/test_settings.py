from __future__ import annotations

import pytest

from shared.errors import ConfigError
from shared.settings import SETTINGS, load_settings

BASE = {
    "EVENTHUB_CONNECTION": "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=c2VjcmV0",
    "AzureWebJobsStorage": "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.windows.net",
    "AML_ENDPOINT_URL": "https://fleet.westeurope.inference.ml.azure.com/score",
    "AML_ENDPOINT_KEY": "aml-secret",
}


def test_load_settings_defaults():
    s = load_settings(BASE)
    assert (s.eventhub_name, s.eventhub_consumer_group) == ("readings", "$Default")
    assert (s.score_max_rows, s.score_max_bytes, s.score_max_concurrency) == (2000, 1048576, 4)
    assert s.tables_connection == BASE["AzureWebJobsStorage"]
    assert s.powerbi_enabled is False
    assert s.results_eventhub_connection == ""


@pytest.mark.parametrize("name", ["EVENTHUB_CONNECTION", "AML_ENDPOINT_URL", "AML_ENDPOINT_KEY"])
def test_load_settings_names_a_missing_setting(name):
    env = {k: v for k, v in BASE.items() if k != name}
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert info.value.setting == name
    assert str(info.value).startswith(f"{name}: is required")


def test_load_settings_needs_some_table_connection():
    env = {k: v for k, v in BASE.items() if k != "AzureWebJobsStorage"}
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert info.value.setting == "TABLES_CONNECTION"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("SCORE_MAX_ROWS", "lots", "SCORE_MAX_ROWS: must be a number, got 'lots'"),
        ("SCORE_MAX_ROWS", "0", "SCORE_MAX_ROWS: must be between 1 and 100000, got '0'"),
        (
            "SCORE_MAX_CONCURRENCY",
            "65",
            "SCORE_MAX_CONCURRENCY: must be between 1 and 64, got '65'",
        ),
        (
            "AML_ENDPOINT_URL",
            "http://example.com/score",
            "AML_ENDPOINT_URL: must be an https:// URL (http:// only for localhost)",
        ),
        (
            "EVENTHUB_CONNECTION",
            "sb://x",
            "EVENTHUB_CONNECTION: is not a connection string: it has no Endpoint=",
        ),
        (
            "TABLE_PREFIX",
            "fleet-1",
            "TABLE_PREFIX: must be empty or a letter then up to 19 letters and digits",
        ),
        (
            "TABLE_PREFIX",
            "1abc",
            "TABLE_PREFIX: must be empty or a letter then up to 19 letters and digits",
        ),
        (
            "SCORE_RETRY_DEADLINE_SECONDS",
            "600",
            "SCORE_RETRY_DEADLINE_SECONDS: must be between 0 and 300, got '600'",
        ),
        ("POWERBI_DATASET_ID", "not-a-guid", "POWERBI_DATASET_ID: must be a GUID"),
    ],
)
def test_load_settings_names_a_malformed_setting(name, value, message):
    with pytest.raises(ConfigError) as info:
        load_settings({**BASE, name: value})
    assert str(info.value) == message


def test_load_settings_allows_http_on_localhost():
    assert load_settings(
        {**BASE, "AML_ENDPOINT_URL": "http://127.0.0.1:5001/score"}
    ).aml_endpoint_url.startswith("http://")


def test_settings_repr_hides_secrets():
    text = repr(load_settings(BASE))
    assert "aml-secret" not in text
    assert "c2VjcmV0" not in text
    assert "a2V5" not in text
    assert "readings" in text


def test_every_setting_has_a_meaning():
    assert all(s.meaning for s in SETTINGS)
    assert len({s.name for s in SETTINGS}) == len(SETTINGS)


IDENTITY = {
    "EVENTHUB_CONNECTION__fullyQualifiedNamespace": "fleet-ns.servicebus.windows.net",
    "TABLES_CONNECTION__tableServiceUri": "https://fleetst.table.core.windows.net/",
    "AML_ENDPOINT_URL": BASE["AML_ENDPOINT_URL"],
    "AML_ENDPOINT_KEY": BASE["AML_ENDPOINT_KEY"],
}


def test_load_settings_identity_based_connections():
    s = load_settings(IDENTITY)
    assert (s.eventhub_connection, s.eventhub_namespace) == ("", "fleet-ns.servicebus.windows.net")
    assert (s.tables_connection, s.tables_endpoint) == (
        "",
        "https://fleetst.table.core.windows.net",
    )
    assert (s.results_enabled, s.results_eventhub_namespace) == (False, "")


def test_load_settings_connection_string_wins_over_identity():
    s = load_settings({**IDENTITY, **BASE, "TABLES_CONNECTION": BASE["AzureWebJobsStorage"]})
    assert (s.eventhub_connection, s.eventhub_namespace) == (BASE["EVENTHUB_CONNECTION"], "")
    assert (s.tables_connection, s.tables_endpoint) == (BASE["AzureWebJobsStorage"], "")


def test_load_settings_results_hub_by_identity():
    s = load_settings(
        {
            **IDENTITY,
            "RESULTS_EVENTHUB_CONNECTION__fullyQualifiedNamespace": "fleet-ns.servicebus.windows.net",
        }
    )
    assert (s.results_enabled, s.results_eventhub_namespace, s.results_eventhub_name) == (
        True,
        "fleet-ns.servicebus.windows.net",
        "predictions",
    )


@pytest.mark.parametrize(
    ("host_storage", "endpoint"),
    [
        ({"AzureWebJobsStorage__accountName": "fleetst"}, "https://fleetst.table.core.windows.net"),
        (
            {"AzureWebJobsStorage__tableServiceUri": "https://other.table.core.windows.net"},
            "https://other.table.core.windows.net",
        ),
    ],
)
def test_load_settings_tables_fall_back_to_the_hosts_identity_storage(host_storage, endpoint):
    env = {k: v for k, v in IDENTITY.items() if not k.startswith("TABLES_")}
    s = load_settings({**env, **host_storage})
    assert (s.tables_connection, s.tables_endpoint) == ("", endpoint)


def test_load_settings_names_the_event_hub_setting_when_neither_form_is_set():
    env = {k: v for k, v in IDENTITY.items() if not k.startswith("EVENTHUB_")}
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert info.value.setting == "EVENTHUB_CONNECTION"
    assert "EVENTHUB_CONNECTION__fullyQualifiedNamespace" in str(info.value)


def test_load_settings_names_the_table_setting_when_no_form_is_set():
    env = {k: v for k, v in IDENTITY.items() if not k.startswith("TABLES_")}
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert info.value.setting == "TABLES_CONNECTION"
    assert "TABLES_CONNECTION__tableServiceUri" in str(info.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("EVENTHUB_CONNECTION__fullyQualifiedNamespace", "sb://fleet-ns.servicebus.windows.net/"),
        ("EVENTHUB_CONNECTION__fullyQualifiedNamespace", "fleet-ns"),
        ("TABLES_CONNECTION__tableServiceUri", "http://fleetst.table.core.windows.net"),
        ("TABLES_CONNECTION__tableServiceUri", "fleetst.table.core.windows.net"),
    ],
)
def test_load_settings_names_a_malformed_identity_setting(name, value):
    with pytest.raises(ConfigError) as info:
        load_settings({**IDENTITY, name: value})
    assert info.value.setting == name


def test_load_settings_refuses_an_unresolved_key_vault_reference():
    ref = "@Microsoft.KeyVault(SecretUri=https://fleet-kv.vault.azure.net/secrets/aml-key/)"
    with pytest.raises(ConfigError) as info:
        load_settings({**BASE, "AML_ENDPOINT_KEY": ref})
    assert info.value.setting == "AML_ENDPOINT_KEY"
    assert "Key Vault Secrets User" in str(info.value)


def test_identity_settings_follow_the_functions_convention():
    named = {s.name: s.identity_name for s in SETTINGS if s.identity}
    assert named == {
        "EVENTHUB_CONNECTION": "EVENTHUB_CONNECTION__fullyQualifiedNamespace",
        "TABLES_CONNECTION": "TABLES_CONNECTION__tableServiceUri",
        "RESULTS_EVENTHUB_CONNECTION": "RESULTS_EVENTHUB_CONNECTION__fullyQualifiedNamespace",
    }
