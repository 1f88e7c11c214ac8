from __future__ import annotations

from collections.abc import Callable

import pytest
import requests

from shared.scoring import AmlClient
from shared.sessions import ENVIRONMENT_SETTINGS
from shared.store import _client_options

# The hot paths' sessions: the table store's (inside the SDK's transport) and the AML client's.
SESSIONS: dict[str, Callable[[], requests.Session]] = {
    "table store": lambda: _client_options(threads=1, retry_total=0)["transport"].session,
    "AML client": lambda: AmlClient("http://127.0.0.1:9/score", "key")._session,
}


@pytest.mark.parametrize("setting", [None, "HTTPS_PROXY", "no_proxy", "REQUESTS_CA_BUNDLE"])
@pytest.mark.parametrize("user", list(SESSIONS))
def test_a_session_reads_the_environment_per_request_only_when_it_holds_settings(
    monkeypatch, user, setting
):
    for name in ENVIRONMENT_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    if setting is not None:
        monkeypatch.setenv(setting, "http://127.0.0.1:9")
    session = SESSIONS[user]()
    try:
        assert session.trust_env is (setting is not None)
    finally:
        session.close()
