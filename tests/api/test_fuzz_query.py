"""Property tests of the query API over the local host: any query string, never a 5xx.

Parameters are drawn near the documented ones (right names, wrong values, unknown names,
unicode); every 400 names the parameters it refuses.
"""

from __future__ import annotations

import string

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from local.host.http import HttpHost
from shared.query import _ANOMALY_PARAMS, _PREDICTION_PARAMS
from tests.api.conftest import KEY, fuzz_settings

WIRE = fuzz_settings(60, http=True)

values = (
    st.text(max_size=30)
    | st.sampled_from(["true", "0", "asc", "desc", "2026-11-27", "1000", "1001", "-1", "1e3"])
    | st.sampled_from(["2026-11-27T00:00:00Z", "2026-11-27T00:00:00", "eyJrIjoxfQ", "+" * 5])
)
names = st.sampled_from(sorted(_PREDICTION_PARAMS | _ANOMALY_PARAMS)) | st.text(
    string.ascii_letters + "_", min_size=1, max_size=12
).filter(lambda n: n.lower() != "code")
queries = st.dictionaries(names, values, max_size=5)
devices = st.text(max_size=70).filter(lambda d: "/" not in d and d.strip(".") != "")


def get(host: HttpHost, http: requests.Session, path: str, params: dict[str, str]) -> None:
    response = http.get(
        f"{host.url}/api/{path}", params=params, headers={"x-functions-key": KEY}, timeout=30
    )
    assert response.status_code < 500, (response.status_code, response.content[:300])
    if response.status_code == 400:
        details = response.json()["details"]
        assert details
        assert {d["field"] for d in details} <= set(params) | {"device_id"}


@WIRE
@given(device=devices, params=queries)
def test_query_http_device_predictions_never_5xx(host, http, device, params):
    get(host, http, f"devices/{requests.utils.quote(device, safe='')}/predictions", params)


@WIRE
@given(params=queries)
def test_query_http_anomalies_never_5xx(host, http, params):
    get(host, http, "anomalies", params)


@pytest.mark.parametrize(
    "params",
    [{"from": "0001-01-01T00:00:00+01:00"}, {"to": "0001-01-01T12:00:00Z"}],
    ids=["from-offset-before-year-1", "to-minus-24h-before-year-1"],
)
def test_query_http_timestamps_at_the_edge_of_the_calendar_are_400(host, http, params):
    response = http.get(
        f"{host.url}/api/devices/pump-0007/predictions",
        params=params,
        headers={"x-functions-key": KEY},
        timeout=30,
    )
    assert response.status_code == 400, response.content[:300]
    assert [d["field"] for d in response.json()["details"]] == list(params)
