"""FaultProxy against a tiny in-test upstream, and through the real scoring client."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import ThreadingHTTPServer

import pytest
import requests
from requests.adapters import HTTPAdapter

from local.chaos.faults import FaultProxy
from shared.errors import PermanentError, TransientError
from shared.scoring import AmlClient
from tests.support.http_server import QuietHandler


class _Upstream(QuietHandler):
    """POST /score echoes what it saw; GET / is healthy; anything else is 404."""

    protocol_version = "HTTP/1.1"
    timeout = 5
    disable_nagle_algorithm = True

    def _send(self, status, doc):
        self.reply(status, doc, {"x-ms-request-id": "req-1"})

    def do_GET(self):
        if self.path == "/":
            self._send(200, {"status": "Healthy"})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self):
        doc = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        seen = {
            name: self.headers.get(name)
            for name in ("Authorization", "azureml-model-deployment", "Keep-Alive", "Connection")
        }
        self._send(200, {"devices": len(doc["devices"]), "path": self.path, "headers": seen})


def _body(*device_ids):
    devices = [{"device_id": d, "state": None, "readings": []} for d in device_ids]
    return json.dumps({"devices": devices}).encode()


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def proxy(upstream) -> Iterator[FaultProxy]:
    with FaultProxy(upstream, seed=3) as p:
        yield p


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def test_faultproxy_forwards_body_status_and_headers(proxy, session):
    resp = session.post(
        proxy.score_url + "?verbose=1",
        data=_body("a", "b", "c"),
        headers={
            "Authorization": "Bearer k",
            "azureml-model-deployment": "blue",
            "Keep-Alive": "timeout=5",
            "Content-Type": "application/json",
        },
    )
    assert resp.status_code == 200
    assert resp.json() == {
        "devices": 3,
        "path": "/score?verbose=1",
        "headers": {
            "Authorization": "Bearer k",
            "azureml-model-deployment": "blue",
            "Keep-Alive": None,
            "Connection": None,
        },
    }
    assert resp.headers["x-ms-request-id"] == "req-1"
    assert resp.headers["Content-Type"] == "application/json"
    assert session.get(proxy.url + "/").json() == {"status": "Healthy"}
    missing = session.get(proxy.url + "/nowhere")
    assert (missing.status_code, missing.json()) == (404, {"error": "not found"})
    assert proxy.counts() == {
        "forwarded": 1,
        "injected_503": 0,
        "injected_429": 0,
        "down": 0,
        "rejected": 0,
    }


def test_faultproxy_flaky_all_503_keeps_connection_in_sync(proxy, session):
    proxy.flaky(share_503=1.0, share_429=0.0)
    statuses = [session.post(proxy.score_url, data=_body("a")).status_code for _ in range(5)]
    assert statuses == [503] * 5
    proxy.healthy()
    # Same pooled connection: the injected answers consumed their bodies.
    assert session.post(proxy.score_url, data=_body("a", "b")).json()["devices"] == 2
    assert proxy.counts()["injected_503"] == 5
    assert proxy.counts()["forwarded"] == 1


def test_faultproxy_flaky_429_has_ceiled_retry_after(proxy, session):
    proxy.flaky(share_503=0.0, share_429=1.0, retry_after=1.2)
    resp = session.post(proxy.score_url, data=_body("a"))
    assert resp.status_code == 429
    assert resp.headers["Retry-After"] == "2"
    assert resp.headers["Content-Type"] == "application/json"
    assert isinstance(resp.json()["message"], str)


def test_faultproxy_flaky_mixed_share_lands_near_share(proxy, session):
    session.mount("http://", HTTPAdapter(pool_maxsize=8))
    proxy.flaky(share_503=0.2, share_429=0.3)
    with ThreadPoolExecutor(8) as pool:
        statuses = list(
            pool.map(
                lambda _: session.post(proxy.score_url, data=_body("a")).status_code, range(400)
            )
        )
    counts = proxy.counts()
    assert 50 <= statuses.count(503) <= 110
    assert 90 <= statuses.count(429) <= 150
    assert counts == {
        "forwarded": statuses.count(200),
        "injected_503": statuses.count(503),
        "injected_429": statuses.count(429),
        "down": 0,
        "rejected": 0,
    }
    assert sum(counts.values()) == 400


def test_faultproxy_same_seed_same_faults(upstream):
    def run():
        with FaultProxy(upstream, seed=11) as p, requests.Session() as s:
            p.flaky(share_503=0.3, share_429=0.3)
            return [s.post(p.score_url, data=_body("a")).status_code for _ in range(30)]

    assert run() == run()


def test_faultproxy_down_503_but_health_forwarded(proxy, session):
    proxy.down()
    resp = session.post(proxy.score_url, data=_body("a"))
    assert resp.status_code == 503
    assert isinstance(resp.json()["message"], str)
    health = session.get(proxy.url + "/")
    assert (health.status_code, health.json()) == (200, {"status": "Healthy"})
    assert proxy.counts()["down"] == 1


def test_faultproxy_down_refuse_hangs_up(proxy, session):
    proxy.down(refuse=True)
    with pytest.raises(requests.ConnectionError):
        session.post(proxy.score_url, data=_body("a"))
    assert session.get(proxy.url + "/").status_code == 200
    assert proxy.counts()["down"] == 1


def test_faultproxy_reject_devices_names_first_poisoned(proxy, session):
    proxy.reject_devices("poison-")
    resp = session.post(proxy.score_url, data=_body("ok-0", "poison-1", "poison-2"))
    assert resp.status_code == 400
    assert resp.json()["field"] == "devices[1].readings"
    assert isinstance(resp.json()["error"], str)
    assert session.post(proxy.score_url, data=_body("ok-0", "ok-1")).json()["devices"] == 2
    proxy.reject_devices(None)
    assert session.post(proxy.score_url, data=_body("poison-1")).status_code == 200
    assert (proxy.counts()["rejected"], proxy.counts()["forwarded"]) == (1, 2)


def test_faultproxy_healthy_restores(proxy, session):
    proxy.down()
    assert session.post(proxy.score_url, data=_body("a")).status_code == 503
    proxy.flaky(share_503=0.5, share_429=0.5)
    assert session.post(proxy.score_url, data=_body("a")).status_code in (429, 503)
    proxy.healthy()
    assert [session.post(proxy.score_url, data=_body("a")).status_code for _ in range(10)] == [
        200
    ] * 10


def test_faultproxy_flaky_rejects_bad_arguments(proxy):
    with pytest.raises(ValueError, match="shares"):
        proxy.flaky(share_503=0.7, share_429=0.4)
    with pytest.raises(ValueError, match="retry_after"):
        proxy.flaky(share_503=0.1, share_429=0.1, retry_after=-1.0)


def test_faultproxy_url_needs_start_when_port_is_zero(upstream):
    with pytest.raises(RuntimeError, match="start"):
        _ = FaultProxy(upstream).url
    with pytest.raises(ValueError, match="http://"):
        FaultProxy("ftp://127.0.0.1:1")


def test_faultproxy_unreachable_upstream_is_502_json(session):
    with FaultProxy(f"http://127.0.0.1:{_free_port()}") as p:
        resp = session.post(p.score_url, data=_body("a"))
        assert resp.status_code == 502
        assert resp.json()["error"] == "upstream unreachable"
        assert session.get(p.url + "/").status_code == 502


def test_faultproxy_stop_is_prompt_with_open_keepalive(upstream, session):
    p = FaultProxy(upstream)
    p.start()
    assert session.get(p.url + "/").status_code == 200  # leaves a pooled connection open
    started = time.monotonic()
    p.stop()
    # close_connections(timeout=2.0) may spend its whole 2 s by design; 5 s still means prompt.
    assert time.monotonic() - started < 5.0
    p.stop()  # idempotent
    with pytest.raises(requests.ConnectionError):
        session.get(p.url + "/")


def test_faultproxy_never_logs_authorization(proxy, session, caplog):
    caplog.set_level(logging.DEBUG, logger="local.chaos.faults")
    session.post(proxy.score_url, data=_body("a"), headers={"Authorization": "Bearer s3cret"})
    proxy.flaky(share_503=1.0, share_429=0.0)
    session.post(proxy.score_url, data=_body("a"), headers={"Authorization": "Bearer s3cret"})
    assert caplog.records
    assert "s3cret" not in caplog.text


def test_faultproxy_faults_classified_by_aml_client(proxy):
    client = AmlClient(proxy.score_url, "key")
    try:
        assert client.score(_body("a", "b"))["devices"] == 2

        proxy.flaky(share_503=0.0, share_429=1.0, retry_after=1.2)
        with pytest.raises(TransientError) as throttled:
            client.score(_body("a"))
        assert (throttled.value.status, throttled.value.retry_after) == (429, 2.0)

        proxy.flaky(share_503=1.0, share_429=0.0)
        with pytest.raises(TransientError) as unavailable:
            client.score(_body("a"))
        assert unavailable.value.status == 503

        proxy.down(refuse=True)
        with pytest.raises(TransientError, match="unreachable"):
            client.score(_body("a"))

        proxy.healthy()
        proxy.reject_devices("poison-")
        with pytest.raises(PermanentError) as refused:
            client.score(_body("ok", "poison-1"))
        assert refused.value.status == 400
        assert "devices[1].readings" in str(refused.value)
    finally:
        client.close()


def test_faultproxy_counts_each_reading_it_saw_scored(proxy, session):
    body = json.dumps(
        {
            "devices": [
                {"device_id": "a", "readings": [{"timestamp": "t1"}, {"timestamp": "t2"}]},
                {"device_id": "b", "readings": [{"timestamp": "t1"}]},
            ]
        }
    ).encode()
    assert session.post(proxy.score_url, data=body).status_code == 200
    assert session.post(proxy.score_url, data=body).status_code == 200
    columns = {"contract": 2, "devices": [{"device_id": "a", "timestamps": ["t2", "t3"]}]}
    assert session.post(proxy.score_url, data=json.dumps(columns).encode()).status_code == 200
    proxy.flaky(share_503=1.0, share_429=0.0)
    assert session.post(proxy.score_url, data=body).status_code == 503  # not scored
    assert proxy.scored() == {("a", "t1"): 2, ("a", "t2"): 3, ("a", "t3"): 1, ("b", "t1"): 2}


def test_faultproxy_hold_keeps_a_scoring_call_in_flight_then_forwards_it(proxy, session):
    proxy.hold(0.5)
    started = time.monotonic()
    resp = session.post(proxy.score_url, data=_body("a"))
    held = time.monotonic() - started
    assert resp.status_code == 200
    assert held >= 0.5
    assert session.get(proxy.url + "/").status_code == 200  # health is never held
    proxy.healthy()
    with pytest.raises(ValueError, match="hold"):
        proxy.hold(-1)
