"""infra/azuredeploy.json (and main.bicep) checked against the code that runs on Azure.

The template is evaluated as ARM would evaluate it (tests/infra/arm.py), for both plans and for
the shortest and longest name prefix: the app settings it sets must load through
`shared.settings.load_settings`, name every setting the code reads, and satisfy every binding in
the function.json files; resource names must obey Azure's naming rules.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from shared.settings import SETTINGS, load_settings

from .arm import RUNTIME, Template

ROOT = Path(__file__).resolve().parents[2]
ARM = json.loads((ROOT / "infra" / "azuredeploy.json").read_text())
BICEP = (ROOT / "infra" / "main.bicep").read_text()
RG = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/fleet-rg"
REQUIRED_PARAMETERS = {
    "amlEndpointUrl": "https://fleet-anomaly.westeurope.inference.ml.azure.com/score",
    "amlEndpointKey": "aml-key",
}
# Settings the Functions host reads itself (not shared/settings.py).
HOST_SETTINGS = {
    "AzureWebJobsStorage__accountName",
    "FUNCTIONS_REQUEST_BODY_SIZE_LIMIT",
}
PREMIUM_ONLY = {
    "FUNCTIONS_EXTENSION_VERSION",
    "FUNCTIONS_WORKER_RUNTIME",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTSHARE",
}
KEY_VAULT_REFERENCE = re.compile(r"@Microsoft\.KeyVault\(VaultName=[^;]+;SecretName=[a-z0-9-]+\)")
CASES = [
    pytest.param({}, id="flex-defaults"),
    pytest.param({"planType": "ElasticPremium"}, id="premium"),
    pytest.param({"namePrefix": "abcdefghijk", "deployResultsHub": True}, id="long-prefix"),
    pytest.param({"namePrefix": "abc", "tablePrefix": "fleet"}, id="short-prefix"),
]


def deployment(**parameters: Any) -> Template:
    return Template(ARM, {**REQUIRED_PARAMETERS, **parameters}, rg_id=RG)


def resources(t: Template) -> list[tuple[str, str]]:
    """(type, name) of every resource the deployment creates, copy loops expanded."""
    found = []
    for res in ARM["resources"]:
        count = t.value(res["copy"]["count"]) if "copy" in res else 1
        for i in range(count):
            if t.value(res.get("condition", True), copy_index=i):
                found.append((res["type"], t.value(res["name"], copy_index=i)))
    return found


def app_settings(t: Template) -> dict[str, Any]:
    """What the appsettings resource sets, as the deployment would compute it."""
    [config] = [r for r in ARM["resources"] if r["type"] == "Microsoft.Web/sites/config"]
    assert t.value(config["name"]).endswith("/appsettings")
    return t.value(config["properties"])


def resolved(settings: dict[str, Any]) -> dict[str, str]:
    """App settings as the worker sees them: Key Vault references resolved by the platform."""
    return {
        name: "secret-from-key-vault" if KEY_VAULT_REFERENCE.fullmatch(str(v)) else str(v)
        for name, v in settings.items()
    }


def bindings() -> list[dict[str, Any]]:
    return [
        binding
        for path in sorted(ROOT.glob("*_function/function.json"))
        for binding in json.loads(path.read_text())["bindings"]
    ]


@pytest.mark.parametrize("parameters", CASES)
def test_template_settings_load_as_the_worker_would_load_them(parameters):
    t = deployment(**parameters)
    settings = load_settings(resolved(app_settings(t)))
    host = f"{t.variable('eventHubsNamespaceName')}.servicebus.windows.net"
    assert settings.eventhub_connection == ""
    assert settings.eventhub_namespace == host
    assert settings.tables_connection == ""
    assert settings.tables_endpoint == (
        f"https://{t.variable('storageAccountName')}.table.core.windows.net"
    )
    assert settings.aml_endpoint_url == REQUIRED_PARAMETERS["amlEndpointUrl"]
    assert settings.aml_endpoint_key == "secret-from-key-vault"
    assert settings.table_prefix == parameters.get("tablePrefix", "")
    assert settings.results_eventhub_namespace == (host if t.params["deployResultsHub"] else "")
    assert settings.powerbi_enabled is False
    assert settings.applicationinsights_connection_string  # metrics export to App Insights


def test_template_sets_every_setting_the_code_reads():
    names = set(app_settings(deployment()))
    missing = [s.name for s in SETTINGS if s.name not in names and s.identity_name not in names]
    assert missing == []


def test_template_sets_every_required_setting_by_value_or_identity():
    names = set(app_settings(deployment()))
    required = [s for s in SETTINGS if s.default is None]
    assert {s.name for s in required} >= {"EVENTHUB_CONNECTION", "AML_ENDPOINT_URL"}
    assert [s.name for s in required if not {s.name, s.identity_name} & names] == []


def test_template_sets_no_setting_the_code_does_not_know():
    known = {s.name for s in SETTINGS} | {s.identity_name for s in SETTINGS} | HOST_SETTINGS
    assert set(app_settings(deployment())) - known == set()
    assert set(app_settings(deployment(planType="ElasticPremium"))) - known == PREMIUM_ONLY


def test_template_uses_identity_not_keys_for_connections():
    settings = app_settings(deployment(deployResultsHub=True))
    connections = [s for s in SETTINGS if s.identity]
    assert [s.name for s in connections if s.name in settings] == []
    assert all(settings[s.identity_name] for s in connections)
    assert "AzureWebJobsStorage" not in settings


def test_template_secrets_are_key_vault_references_or_secure_parameters():
    settings = app_settings(
        deployment(powerBiClientSecret="pbi-secret", powerBiPushUrl="https://api.powerbi.com/x")
    )
    for s in SETTINGS:
        if s.secret and s.name in settings and settings[s.name] != "":
            assert KEY_VAULT_REFERENCE.fullmatch(settings[s.name]), s.name
    secure = {n for n, p in ARM["parameters"].items() if p["type"] == "securestring"}
    assert secure == {"amlEndpointKey", "powerBiClientSecret", "powerBiPushUrl"}
    assert all(ARM["parameters"][n].get("defaultValue", "") == "" for n in secure)
    vault = deployment().variable("keyVaultName")
    assert settings["AML_ENDPOINT_KEY"] == (
        f"@Microsoft.KeyVault(VaultName={vault};SecretName=aml-endpoint-key)"
    )


def test_template_creates_the_secrets_its_references_name():
    t = deployment(powerBiClientSecret="pbi-secret")
    secrets = {n.split("/")[1] for kind, n in resources(t) if kind.endswith("vaults/secrets")}
    named = {
        re.search(r"SecretName=([a-z0-9-]+)", v).group(1)
        for v in app_settings(t).values()
        if KEY_VAULT_REFERENCE.fullmatch(str(v))
    }
    assert named == secrets == {"aml-endpoint-key", "powerbi-client-secret"}


def test_every_binding_connection_is_a_setting_the_template_sets():
    settings = app_settings(deployment())
    connections = {b["connection"] for b in bindings() if "connection" in b}
    assert connections == {"EVENTHUB_CONNECTION"}
    unset = [
        c
        for c in connections
        if c not in settings and f"{c}__fullyQualifiedNamespace" not in settings
    ]
    assert unset == []


def test_every_binding_expression_resolves_to_a_template_setting():
    settings = app_settings(deployment())
    named = {n for b in bindings() for v in b.values() for n in re.findall(r"%(\w+)%", str(v))}
    assert named == {"EVENTHUB_NAME", "EVENTHUB_CONSUMER_GROUP"}
    assert {n: n in settings and settings[n] != "" for n in named} == dict.fromkeys(named, True)


def test_hub_and_consumer_group_are_the_ones_the_settings_name():
    t = deployment(deployResultsHub=True)
    settings = app_settings(t)
    defaults = {s.name: s.default for s in SETTINGS}
    made = resources(t)
    namespace = t.variable("eventHubsNamespaceName")
    hubs = {n for kind, n in made if kind == "Microsoft.EventHub/namespaces/eventhubs"}
    groups = {n for kind, n in made if kind.endswith("eventhubs/consumergroups")}
    assert settings["EVENTHUB_NAME"] == defaults["EVENTHUB_NAME"] == "readings"
    assert settings["RESULTS_EVENTHUB_NAME"] == defaults["RESULTS_EVENTHUB_NAME"]
    assert hubs == {f"{namespace}/readings", f"{namespace}/{defaults['RESULTS_EVENTHUB_NAME']}"}
    # Its own consumer group, not $Default: other readers (Stream Analytics, a debugging
    # consumer) must not steal the score trigger's partitions.
    assert groups == {f"{namespace}/readings/{settings['EVENTHUB_CONSUMER_GROUP']}"}
    assert settings["EVENTHUB_CONSUMER_GROUP"] == "scoring"


def test_results_hub_only_when_asked_for():
    hubs = [n for kind, n in resources(deployment()) if kind.endswith("namespaces/eventhubs")]
    assert [h.split("/")[1] for h in hubs] == ["readings"]
    assert app_settings(deployment())["RESULTS_EVENTHUB_CONNECTION__fullyQualifiedNamespace"] == ""


def test_readings_hub_partitions_default_to_eight_and_follow_the_parameter():
    [hub] = [r for r in ARM["resources"] if r["metadata"]["bicepSymbol"] == "readingsHub"]
    assert deployment().value(hub["properties"]["partitionCount"]) == 8
    assert deployment(partitionCount=32).value(hub["properties"]["partitionCount"]) == 32


def test_tuning_settings_in_the_template_are_the_code_defaults():
    """Literal values in the template equal the code's defaults: one source of truth."""
    t = deployment()
    literal = {
        name: value
        for name, value in ARM["variables"]["appSettings"].items()
        if not str(value).startswith("[") and name not in HOST_SETTINGS
    }
    defaults = {s.name: s.default for s in SETTINGS}
    assert len(literal) >= 10
    assert {n: defaults[n] for n in literal} == literal
    assert app_settings(t)["FUNCTIONS_REQUEST_BODY_SIZE_LIMIT"] == str(1024 * 1024)


@pytest.mark.parametrize("parameters", CASES)
def test_the_four_tables_and_the_checkpoint_container_are_created(parameters):
    t = deployment(**parameters)
    made = resources(t)
    account = t.variable("storageAccountName")
    prefix = parameters.get("tablePrefix", "")
    tables = {n for kind, n in made if kind.endswith("tableServices/tables")}
    assert tables == {
        f"{account}/default/{prefix}{name}" for name in ("Predictions", "Anomalies", "DeadLetters")
    }
    containers = {n.split("/")[-1] for kind, n in made if kind.endswith("/containers")}
    flex = t.params["planType"] == "FlexConsumption"
    assert containers == {"azure-webjobs-eventhub"} | ({"app-package"} if flex else set())


def test_table_names_match_the_store():
    from shared import store

    assert ARM["variables"]["tableNames"] == list(store._TABLES)


# Naming rules (learn.microsoft.com, "Naming rules and restrictions for Azure resources").
NAME_RULES = {
    "Microsoft.Storage/storageAccounts": r"[a-z0-9]{3,24}",
    "Microsoft.KeyVault/vaults": r"(?!.*--)[A-Za-z][A-Za-z0-9-]{1,22}[A-Za-z0-9]",
    "Microsoft.EventHub/namespaces": r"[A-Za-z][A-Za-z0-9-]{4,48}[A-Za-z0-9]",
    "Microsoft.EventHub/namespaces/eventhubs": r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}",
    "Microsoft.EventHub/namespaces/eventhubs/consumergroups": r"[A-Za-z0-9][A-Za-z0-9._-]{0,49}",
    "Microsoft.Web/sites": r"[A-Za-z0-9][A-Za-z0-9-]{0,58}[A-Za-z0-9]",
    "Microsoft.Web/serverfarms": r"[A-Za-z0-9-]{1,60}",
    "Microsoft.Insights/components": r"[^%&\\?/]{1,260}",
    "Microsoft.OperationalInsights/workspaces": r"[A-Za-z0-9][A-Za-z0-9-]{2,61}[A-Za-z0-9]",
    "Microsoft.Storage/storageAccounts/tableServices/tables": r"[A-Za-z][A-Za-z0-9]{2,62}",
    "Microsoft.Storage/storageAccounts/blobServices/containers": r"(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]",
    "Microsoft.Storage/storageAccounts/fileServices/shares": r"(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]",
    "Microsoft.KeyVault/vaults/secrets": r"[A-Za-z0-9-]{1,127}",
}


@pytest.mark.parametrize("parameters", CASES)
def test_resource_names_obey_azure_naming_rules(parameters):
    broken = []
    for kind, name in resources(deployment(**parameters)):
        if kind in NAME_RULES and not re.fullmatch(NAME_RULES[kind], name.split("/")[-1]):
            broken.append((kind, name))
    assert broken == []


def test_naming_rules_cover_every_named_resource_type():
    kinds = {kind for kind, _ in resources(deployment(planType="ElasticPremium"))}
    unnamed = {
        "Microsoft.Authorization/roleAssignments",  # a guid()
        "Microsoft.Web/sites/config",  # appsettings
        "Microsoft.Storage/storageAccounts/blobServices",  # default
        "Microsoft.Storage/storageAccounts/tableServices",
        "Microsoft.Storage/storageAccounts/fileServices",
    }
    assert kinds - unnamed - set(NAME_RULES) == set()


def test_name_prefix_limits_keep_storage_and_vault_names_whole():
    """At the longest prefix nothing is cut: `take(..., 24)` must never bite into the prefix."""
    spec = ARM["parameters"]["namePrefix"]
    t = deployment(namePrefix="a" * spec["maxLength"])
    assert t.variable("storageAccountName").startswith("a" * spec["maxLength"])
    assert len(t.variable("storageAccountName")) == 24
    assert spec["minLength"] == 3
    assert re.fullmatch(r"[a-z][a-z0-9]*", spec["defaultValue"])


# Built-in role definitions (learn.microsoft.com, "Azure built-in roles").
ROLES = {
    "eventHubsDataSender": "2b629674-e913-4c01-ae53-ef4638d8f975",
    "eventHubsDataReceiver": "a638d3c7-ab3a-418d-83e6-5f17a39d4fde",
    "storageTableDataContributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "storageBlobDataOwner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "keyVaultSecretsUser": "4633458b-17de-408a-b874-0445c86b69e6",
}


def test_the_app_identity_gets_each_role_on_the_right_scope():
    t = deployment()
    scopes = {
        t.value(r["properties"]["roleDefinitionId"]).rsplit("/", 1)[1]: t.value(r["scope"])
        for r in ARM["resources"]
        if r["type"] == "Microsoft.Authorization/roleAssignments"
    }
    assert ARM["variables"]["roles"] == ROLES
    assert scopes == {
        ROLES[
            "eventHubsDataSender"
        ]: f"Microsoft.EventHub/namespaces/{t.variable('eventHubsNamespaceName')}",
        ROLES[
            "eventHubsDataReceiver"
        ]: f"Microsoft.EventHub/namespaces/{t.variable('eventHubsNamespaceName')}",
        ROLES[
            "storageTableDataContributor"
        ]: f"Microsoft.Storage/storageAccounts/{t.variable('storageAccountName')}",
        ROLES[
            "storageBlobDataOwner"
        ]: f"Microsoft.Storage/storageAccounts/{t.variable('storageAccountName')}",
        ROLES["keyVaultSecretsUser"]: f"Microsoft.KeyVault/vaults/{t.variable('keyVaultName')}",
    }
    for r in ARM["resources"]:
        if r["type"] == "Microsoft.Authorization/roleAssignments":
            assert t.value(r["properties"]["principalId"]) is RUNTIME
            assert r["properties"]["principalType"] == "ServicePrincipal"


def test_function_app_is_linux_python_311_with_a_system_identity():
    [site] = [r for r in ARM["resources"] if r["type"] == "Microsoft.Web/sites"]
    assert site["kind"] == "functionapp,linux"
    assert site["identity"] == {"type": "SystemAssigned"}
    flex = deployment().value(site["properties"]["functionAppConfig"])
    assert flex["runtime"] == {"name": "python", "version": "3.11"}
    assert flex["deployment"]["storage"]["authentication"] == {"type": "SystemAssignedIdentity"}
    premium = deployment(planType="ElasticPremium")
    assert premium.value(site["properties"]["functionAppConfig"]) is None
    assert premium.value(site["properties"]["siteConfig"]["linuxFxVersion"]) == "Python|3.11"
    assert deployment().value(site["properties"]["siteConfig"]["linuxFxVersion"]) is None


def test_bicep_and_arm_declare_the_same_parameters_settings_and_resources():
    """The ARM JSON is a hand translation of main.bicep: the two must not drift apart."""
    bicep_params = re.findall(r"^param (\w+) ", BICEP, re.M)
    assert bicep_params == list(ARM["parameters"])
    secure = re.findall(r"^@secure\(\)\nparam (\w+)", BICEP, re.M)
    assert secure == [n for n, p in ARM["parameters"].items() if p["type"] == "securestring"]
    block = BICEP[
        BICEP.index("var appSettings = {") : BICEP.index("\n}\n", BICEP.index("var appSettings"))
    ]
    assert re.findall(r"^  (\w+):", block, re.M) == list(ARM["variables"]["appSettings"])
    symbols = re.findall(r"^resource (\w+) '([^@]+)@([^']+)'", BICEP, re.M)
    assert [(s, t, v) for s, t, v in symbols] == [
        (r["metadata"]["bicepSymbol"], r["type"], r["apiVersion"]) for r in ARM["resources"]
    ]
    for value in ARM["variables"]["roles"].values():
        assert value in BICEP


def test_readme_documents_every_template_parameter_and_passes_only_real_ones():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Deploying to Azure") : readme.index("## Running each part")]
    table = section[section.index("### Template parameters") :]
    assert [n for n in ARM["parameters"] if f"| `{n}` |" not in table] == []
    # `--parameters` and its backslash-continued lines, in every command of the section.
    arguments = re.findall(r"--parameters((?:[^\n]*\\\n)*[^\n]*)", section)
    passed = set(re.findall(r"\b([a-zA-Z]+)=", " ".join(arguments)))
    required = {n for n, p in ARM["parameters"].items() if "defaultValue" not in p}
    assert required <= passed <= set(ARM["parameters"])
    outputs = set(re.findall(r"properties\.outputs\.(\w+)\.value", section))
    assert outputs
    assert outputs <= set(ARM["outputs"])
