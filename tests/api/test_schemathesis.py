"""schemathesis drives every documented operation from openapi.json against the running host.

Whatever it generates from the document, valid (positive) or not (negative): never a 5xx, and
every 400 is JSON naming its fields. The operations' strategies run under plain hypothesis:
schemathesis 4.32's pytest plugin does not load under pytest 9 (`Function._nodeid` is gone).
Calls go through the module's `http` session, so its 5xx are tallied with the other fuzz tests'.
"""

from __future__ import annotations

import pytest
import requests
import schemathesis
from hypothesis import given
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from local.host.http import HttpHost
from tests.api.conftest import KEY, ROOT, fuzz_settings

SCHEMA = schemathesis.openapi.from_path(ROOT / "openapi.json")
OPERATIONS = {op.label: op for op in (r.ok() for r in SCHEMA.get_all_operations())}


# An operation without parameters or body (the document itself) has no negative cases.
RUNS = [
    (label, mode)
    for label, operation in sorted(OPERATIONS.items())
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if mode is GenerationMode.POSITIVE
    or operation.body
    or operation.query
    or operation.path_parameters
]


@pytest.mark.parametrize(("label", "mode"), RUNS)
def test_schemathesis_no_5xx_and_400s_name_their_fields(
    host: HttpHost, http: requests.Session, label, mode
):
    base_url = f"{host.url}/api"

    @fuzz_settings(25, http=True)
    @given(case=OPERATIONS[label].as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        response = case.call(
            base_url=base_url, session=http, headers={"x-functions-key": KEY}, timeout=30
        )
        case.validate_response(response, checks=[not_a_server_error])
        if response.status_code == 400:
            assert all(isinstance(d["field"], str) for d in response.json()["details"])

    run()
