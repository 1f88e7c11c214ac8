"""The app's function.json and host.json, checked against what the Functions runtime reads."""

from __future__ import annotations

import importlib
import inspect
import json
import re
import typing
from pathlib import Path

import azure.functions as func
import pytest

from shared.settings import SETTINGS

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = sorted(p.parent.name for p in ROOT.glob("*_function/function.json"))
TRIGGERS = {"httpTrigger", "eventHubTrigger"}
KNOWN_SETTINGS = {s.name for s in SETTINGS} | {"AzureWebJobsStorage"}


def load(name: str) -> dict:
    return json.loads((ROOT / name / "function.json").read_text())


def test_the_app_has_its_three_functions():
    assert FUNCTIONS == ["ingest_function", "query_function", "score_function"]


@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_json_has_one_trigger_and_main_matches_bindings(name):
    conf = load(name)
    assert conf["scriptFile"] == "__init__.py"
    triggers = [b for b in conf["bindings"] if b["type"] in TRIGGERS]
    assert len(triggers) == 1
    assert triggers[0]["direction"] == "in"
    module = importlib.import_module(name)
    params = list(inspect.signature(module.main).parameters)
    inputs = [b["name"] for b in conf["bindings"] if b["direction"] == "in"]
    assert [p for p in params if p != "context"] == inputs


@pytest.mark.parametrize("name", FUNCTIONS)
def test_main_takes_the_invocation_context_as_the_worker_and_the_local_host_allow(name):
    """The worker passes `context` to a main() that names it and refuses an annotation that is
    not a class named Context (`func.Context | None` fails loading); the local host binds only
    the trigger, so the parameter needs a default."""
    main = importlib.import_module(name).main
    context = inspect.signature(main).parameters["context"]
    hint = typing.get_type_hints(main)["context"]
    assert isinstance(hint, type)
    assert hint.__name__ == "Context"
    assert issubclass(hint, func.Context)
    assert context.default is None


@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_json_names_only_declared_settings(name):
    text = (ROOT / name / "function.json").read_text()
    named = set(re.findall(r"%([A-Za-z0-9_]+)%", text))
    named |= {b["connection"] for b in load(name)["bindings"] if "connection" in b}
    assert named <= KNOWN_SETTINGS


@pytest.mark.parametrize("name", ["ingest_function", "query_function"])
def test_http_functions_need_a_function_key(name):
    conf = load(name)
    [trigger] = [b for b in conf["bindings"] if b["type"] == "httpTrigger"]
    assert trigger["authLevel"] == "function"
    assert {"type": "http", "direction": "out", "name": "$return"} in conf["bindings"]


def test_ingest_route_and_method():
    [trigger] = [b for b in load("ingest_function")["bindings"] if b["type"] == "httpTrigger"]
    assert (trigger["route"], trigger["methods"]) == ("readings", ["post"])


def test_score_trigger_is_batched_binary_with_a_retry_policy():
    conf = load("score_function")
    [trigger] = conf["bindings"]
    assert trigger["type"] == "eventHubTrigger"
    assert (trigger["cardinality"], trigger["dataType"]) == ("many", "binary")
    assert trigger["connection"] == "EVENTHUB_CONNECTION"
    retry = conf["retry"]
    assert retry["strategy"] == "exponentialBackoff"
    assert retry["maxRetryCount"] == -1  # hold the checkpoint until the batch succeeds
    assert re.fullmatch(r"\d\d:\d\d:\d\d", retry["minimumInterval"])
    assert re.fullmatch(r"\d\d:\d\d:\d\d", retry["maximumInterval"])


def test_host_json_pins_event_hub_batching():
    host = json.loads((ROOT / "host.json").read_text())
    assert host["version"] == "2.0"
    assert host["extensionBundle"]["id"] == "Microsoft.Azure.Functions.ExtensionBundle"
    eh = host["extensions"]["eventHubs"]
    assert eh["minEventBatchSize"] <= eh["maxEventBatchSize"] <= eh["prefetchCount"]
    assert re.fullmatch(r"\d\d:\d\d:\d\d", eh["maxWaitTime"])
    assert host["extensions"]["http"]["routePrefix"] == "api"


def test_requirements_hold_only_what_runs_on_azure():
    names = {
        re.split(r"[<>=~!\[ ]", line, maxsplit=1)[0].strip().lower()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {
        "azure-functions",
        "azure-eventhub",
        "azure-data-tables",
        "azure-identity",
        "requests",
    } <= names
    assert not names & {"pytest", "ruff", "hypothesis"}


def test_readme_documents_every_setting():
    readme = (ROOT / "README.md").read_text()
    missing = [s.name for s in SETTINGS if f"| `{s.name}` |" not in readme]
    assert missing == []


def test_readme_deploy_command_sets_every_setting_the_bindings_resolve():
    """The host resolves %NAME% from app settings only: Python defaults do not reach it."""
    readme = (ROOT / "README.md").read_text()
    deploy = readme[readme.index("az functionapp config appsettings set") :].split("```")[0]
    named = set()
    for name in FUNCTIONS:
        named |= set(re.findall(r"%([A-Za-z0-9_]+)%", (ROOT / name / "function.json").read_text()))
        named |= {b["connection"] for b in load(name)["bindings"] if "connection" in b}
    # A connection may be set by identity: Functions reads `<NAME>__fullyQualifiedNamespace`.
    unset = [
        n for n in named if f"{n}=" not in deploy and f"{n}__fullyQualifiedNamespace=" not in deploy
    ]
    assert sorted(unset) == []
