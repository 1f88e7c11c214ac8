"""openapi.json checked against the code: routes, parameters, limits, and OpenAPI validity."""

from __future__ import annotations

import json
import re
from pathlib import Path

import requests
from openapi_spec_validator import validate

from local.host.http import HttpHost
from shared import query, readings
from tests.api.conftest import KEY, ROOT

DOCUMENT = ROOT / "openapi.json"
SAMPLE = {"device_id": "pump-0007"}


def load() -> dict:
    return json.loads(DOCUMENT.read_text())


def deref(doc: dict, node: dict) -> dict:
    """Follow local `$ref`s until a concrete node."""
    while "$ref" in node:
        target: object = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            assert isinstance(target, dict)
            target = target[part]
        assert isinstance(target, dict)
        node = target
    return node


def parameters(doc: dict, path: str, method: str, where: str) -> dict[str, dict]:
    operation = doc["paths"][path][method]
    found = (deref(doc, p) for p in operation.get("parameters", []))
    return {p["name"]: p for p in found if p["in"] == where}


def concrete(path: str) -> str:
    """A request path for a documented path, with sample values for its parameters."""
    return re.sub(r"\{(\w+)\}", lambda m: SAMPLE[m.group(1)], path)


def test_openapi_document_is_valid_openapi_3_1():
    doc = load()
    assert doc["openapi"].startswith("3.1")
    validate(doc)


def test_openapi_paths_and_function_routes_match_both_ways():
    host = HttpHost(ROOT, keys=[KEY], port=0)
    doc = load()
    prefix = doc["servers"][0]["url"]
    assert prefix == f"/{host.route_prefix}"
    routed: dict[str, set[str]] = {}
    for path, operations in doc["paths"].items():
        for method in operations:
            found = host.find(method.upper(), prefix + concrete(path))
            if path == "/openapi.json":
                assert found is None  # served by the host itself, not a function
                continue
            assert found is not None, f"{method.upper()} {path} reaches no function"
            routed.setdefault(found[0].name, set()).add(method.upper())
    served = {f.name: set(f.methods or ()) for f in host.http_functions}
    assert routed == served


def test_openapi_query_parameters_are_the_ones_the_code_reads():
    doc = load()
    predictions = parameters(doc, "/devices/{device_id}/predictions", "get", "query")
    anomalies = parameters(doc, "/anomalies", "get", "query")
    assert set(predictions) == query._PREDICTION_PARAMS
    assert set(anomalies) == query._ANOMALY_PARAMS
    assert set(parameters(doc, "/devices/{device_id}/predictions", "get", "path")) == {"device_id"}
    limit = predictions["limit"]["schema"]
    assert (limit["minimum"], limit["maximum"], limit["default"]) == (
        1,
        query.MAX_LIMIT,
        query.DEFAULT_LIMIT,
    )
    assert predictions["continuation"]["schema"]["maxLength"] == query._MAX_TOKEN
    assert predictions["continuation"]["schema"]["pattern"] == f"^{query._TOKEN.pattern}$"
    assert set(predictions["anomalies_only"]["schema"]["enum"]) == set(query._BOOLEANS)
    assert anomalies["date"]["schema"]["pattern"] == f"^{query._DATE.pattern}$"


def test_openapi_ingest_limits_equal_the_code_constants():
    doc = load()
    schemas = doc["components"]["schemas"]
    body = doc["paths"]["/readings"]["post"]["requestBody"]
    reading = schemas["Reading"]["properties"]
    metrics = reading["metrics"]
    assert body["x-max-body-bytes"] == readings.MAX_BODY_BYTES
    assert schemas["ReadingList"]["maxItems"] == readings.MAX_READINGS
    assert metrics["maxProperties"] == readings.MAX_METRICS
    assert metrics["propertyNames"]["pattern"] == f"^{readings._METRIC_NAME.pattern}$"
    assert schemas["DeviceId"]["pattern"] == f"^{readings._DEVICE_ID.pattern}$"
    assert set(schemas["Reading"]["required"]) == readings._READING_KEYS


def test_openapi_documents_every_ingest_status():
    responses = load()["paths"]["/readings"]["post"]["responses"]
    assert set(responses) == {"202", "400", "401", "413", "415", "503"}
    assert "Retry-After" in responses["503"]["headers"]


def test_openapi_json_is_served_by_the_local_host_without_a_key(host, http):
    url = f"{host.url}/api/openapi.json"
    response = http.get(url, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == load()
    assert http.head(url, timeout=10).status_code == 200
    assert http.post(url, timeout=10).status_code == 404


def test_openapi_json_is_404_when_the_app_has_none(tmp_path: Path):
    (tmp_path / "host.json").write_text('{"version": "2.0"}')
    with HttpHost(tmp_path, port=0) as bare, requests.Session() as http:
        assert http.get(f"{bare.url}/api/openapi.json", timeout=10).status_code == 404
