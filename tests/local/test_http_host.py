"""The local Functions host's HTTP half, over real HTTP on 127.0.0.1.

Routing edge cases run against a throwaway app written to a temporary folder; the contract
cases run against the repo's own ingest_function with its publisher swapped for the in-memory
one, exactly as tests/functions/test_ingest_function.py does.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import pytest
import requests

import ingest_function
from local.host import AppConfigError, apply_settings, load_local_settings
from local.host.http import HttpHost, redact
from local.host.routes import RouteTemplateError, compile_route, sort_routes
from shared.publisher import InMemoryPublisher
from shared.readings import format_timestamp
from shared.wiring import IngestApp

ROOT = Path(__file__).resolve().parents[2]
TOY_KEY = "toy-host-key"
TOY_MASTER = "toy-master-key"
TOY_LIMIT = 4096
INGEST_KEY = "ingest-test-key-0123456789"
INGEST_LIMIT = 64 * 1024

ECHO = """
import json

import azure.functions as func


def main(req: func.HttpRequest) -> func.HttpResponse:
    doc = {
        "function": __name__,
        "method": req.method,
        "url": req.url,
        "route": dict(req.route_params),
        "params": dict(req.params),
        "body": req.get_body().decode("latin-1"),
        "x_test": req.headers.get("x-test"),
    }
    return func.HttpResponse(
        json.dumps(doc),
        status_code=201 if req.method == "POST" else 200,
        headers={"X-Echo": "yes"},
        mimetype="application/json",
    )
"""

BOOM = """
import azure.functions as func


def main(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("kaboom")
"""

# Reads a setting at import, like the app's functions: without it the import fails.
NEEDS_SETTING = """
import os

import azure.functions as func

SETTING = os.environ["HXT_BROKEN_SETTING"]


def main(req: func.HttpRequest) -> str:
    return SETTING
"""


def http_trigger(route: str | None, methods: list[str] | None, auth: str | None) -> dict:
    binding = {"type": "httpTrigger", "direction": "in", "name": "req"}
    if route is not None:
        binding["route"] = route
    if methods is not None:
        binding["methods"] = methods
    if auth is not None:
        binding["authLevel"] = auth
    return binding


RETURN = {"type": "http", "direction": "out", "name": "$return"}
TOY_FUNCTIONS = {
    "hxt_echo": ([http_trigger(None, ["post"], None), RETURN], ECHO),
    "hxt_items_special": ([http_trigger("items/special", ["get"], "anonymous"), RETURN], ECHO),
    "hxt_items_by_id": ([http_trigger("items/{id:int}", ["get"], "anonymous"), RETURN], ECHO),
    "hxt_items_by_name": ([http_trigger("items/{name}", ["get"], "anonymous"), RETURN], ECHO),
    "hxt_products": (
        [http_trigger("products/{category:alpha}/{id:int?}", ["get"], "anonymous"), RETURN],
        ECHO,
    ),
    "hxt_colour": (
        [http_trigger("colour/{c:regex(^(red|blue)$)}", ["get"], "anonymous"), RETURN],
        ECHO,
    ),
    "hxt_digits": ([http_trigger(r"digits/{d:regex(\d{{3}})}", None, "anonymous"), RETURN], ECHO),
    "hxt_files": ([http_trigger("files/{*path}", ["get"], "anonymous"), RETURN], ECHO),
    "hxt_admin": ([http_trigger("admin-op", ["get"], "admin"), RETURN], ECHO),
    "hxt_boom": ([http_trigger("boom", None, "anonymous"), RETURN], BOOM),
    "hxt_broken": ([http_trigger("broken", ["get"], "anonymous"), RETURN], NEEDS_SETTING),
    "hxt_timer": (
        [{"type": "timerTrigger", "direction": "in", "name": "t", "schedule": "0 0 * * * *"}],
        BOOM,
    ),
}


def write_app(root: Path) -> Path:
    (root / "host.json").write_text(
        json.dumps({"version": "2.0", "extensions": {"http": {"routePrefix": "api"}}})
    )
    for name, (bindings, code) in TOY_FUNCTIONS.items():
        (root / name).mkdir()
        (root / name / "function.json").write_text(
            json.dumps({"scriptFile": "__init__.py", "bindings": bindings})
        )
        (root / name / "__init__.py").write_text(code)
    return root


@pytest.fixture(scope="module")
def toy_app(tmp_path_factory) -> Path:
    return write_app(tmp_path_factory.mktemp("toy_app"))


@pytest.fixture(scope="module")
def toy(toy_app) -> Iterator[HttpHost]:
    assert "HXT_BROKEN_SETTING" not in os.environ
    with HttpHost(
        toy_app, keys=[TOY_KEY], master_key=TOY_MASTER, port=0, max_request_body_bytes=TOY_LIMIT
    ) as host:
        yield host


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def get(http: requests.Session, host: HttpHost, path: str, **kwargs) -> requests.Response:
    return http.get(f"{host.url}{path}", timeout=10, **kwargs)


def served_by(response: requests.Response) -> str:
    assert response.status_code == 200, response.status_code
    return response.json()["function"]


def raw_exchange(port: int, request: bytes) -> bytes:
    """Send bytes, read until the server closes: proves what it answers without a body."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


# --- discovery ------------------------------------------------------------------------------


def test_discovery_serves_http_functions_and_lists_the_others(toy):
    assert toy.functions == {
        "hxt_admin": "api/admin-op",
        "hxt_boom": "api/boom",
        "hxt_broken": "api/broken",
        "hxt_colour": "api/colour/{c:regex(^(red|blue)$)}",
        "hxt_digits": r"api/digits/{d:regex(\d{{3}})}",
        "hxt_echo": "api/hxt_echo",
        "hxt_files": "api/files/{*path}",
        "hxt_items_by_id": "api/items/{id:int}",
        "hxt_items_by_name": "api/items/{name}",
        "hxt_items_special": "api/items/special",
        "hxt_products": "api/products/{category:alpha}/{id:int?}",
    }
    assert toy.skipped == {"hxt_timer": "timerTrigger"}
    assert toy.url == f"http://127.0.0.1:{toy.port}"
    assert toy.port != 0


def test_discovery_reads_the_real_app_without_hard_coded_names():
    host = HttpHost(ROOT, keys=[INGEST_KEY], port=0)
    assert host.functions["ingest_function"] == "api/readings"
    assert host.skipped["score_function"] == "eventHubTrigger"


def test_a_disabled_function_is_not_served(toy_app, monkeypatch):
    monkeypatch.setenv("AzureWebJobs.hxt_boom.Disabled", "true")
    host = HttpHost(toy_app, keys=[TOY_KEY], port=0)
    assert "hxt_boom" not in host.functions
    assert host.skipped["hxt_boom"] == "disabled by AzureWebJobs.hxt_boom.Disabled"


def test_a_folder_without_host_json_is_not_an_app(tmp_path):
    with pytest.raises(AppConfigError, match=r"host\.json: not found"):
        HttpHost(tmp_path, port=0)


def test_a_bad_route_names_its_function_json(tmp_path):
    (tmp_path / "host.json").write_text("{}")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "function.json").write_text(
        json.dumps({"bindings": [http_trigger("x/{id:nosuch}", None, "anonymous")]})
    )
    with pytest.raises(AppConfigError, match=r"bad[/\\]function\.json.*'nosuch' could not be"):
        HttpHost(tmp_path, port=0)


def test_empty_keys_are_refused_because_they_would_match_an_empty_code(toy_app):
    with pytest.raises(ValueError, match="non-empty"):
        HttpHost(toy_app, keys=[""], port=0)


def test_stop_ends_idle_keep_alive_connections_and_joins_their_threads(toy_app):
    before = set(threading.enumerate())
    with requests.Session() as session:
        host = HttpHost(toy_app, port=0).start()
        assert session.get(f"{host.url}/api/items/special", timeout=10).status_code == 200
        host.stop()  # the session still holds its keep-alive connection open
        assert not host.running
        assert set(threading.enumerate()) - before == set()


# --- routing --------------------------------------------------------------------------------


def test_literal_route_beats_parameters_and_constraints_order_the_rest(toy, http):
    assert served_by(get(http, toy, "/api/items/special")) == "hxt_items_special"
    assert served_by(get(http, toy, "/API/Items/SPECIAL/")) == "hxt_items_special"
    assert served_by(get(http, toy, "/api/items/42")) == "hxt_items_by_id"
    assert served_by(get(http, toy, "/api/items/bolts")) == "hxt_items_by_name"
    assert get(http, toy, "/api/items/42").json()["route"] == {"id": "42"}


def test_optional_parameter_and_alpha_constraint(toy, http):
    assert get(http, toy, "/api/products/tools").json()["route"] == {"category": "tools"}
    assert get(http, toy, "/api/products/tools/7").json()["route"] == {
        "category": "tools",
        "id": "7",
    }
    assert get(http, toy, "/api/products/42").status_code == 404
    assert get(http, toy, "/api/products/tools/seven").status_code == 404


def test_regex_constraint_with_parentheses_and_alternation(toy, http):
    assert get(http, toy, "/api/colour/red").json()["route"] == {"c": "red"}
    assert get(http, toy, "/api/colour/BLUE").json()["route"] == {"c": "BLUE"}
    assert get(http, toy, "/api/colour/green").status_code == 404
    assert get(http, toy, "/api/colour/redder").status_code == 404


def test_regex_constraint_is_unanchored_like_aspnet_core(toy, http):
    # ASP.NET Core calls Regex.IsMatch: without ^...$ a substring is enough.
    assert get(http, toy, "/api/digits/a1234b").json()["route"] == {"d": "a1234b"}
    assert get(http, toy, "/api/digits/12").status_code == 404


def test_catch_all_takes_the_rest_of_the_path_decoded(toy, http):
    assert get(http, toy, "/api/files/a/b%20c.txt").json()["route"] == {"path": "a/b c.txt"}
    assert get(http, toy, "/api/files").json()["route"] == {}


def test_unknown_path_is_404_with_an_empty_body(toy, http):
    response = get(http, toy, "/api/nothing-here")
    assert (response.status_code, response.content) == (404, b"")
    assert get(http, toy, "/hxt_echo").status_code == 404  # no route prefix, no route


def test_a_method_the_route_does_not_allow_is_404_like_the_host(toy, http):
    # The host makes `methods` a route constraint: no route matches, so 404 (not 405).
    response = http.get(f"{toy.url}/api/hxt_echo", headers={"x-functions-key": TOY_KEY})
    assert (response.status_code, response.content) == (404, b"")
    assert http.delete(f"{toy.url}/api/items/special", timeout=10).status_code == 404
    assert http.request("PURGE", f"{toy.url}/api/items/special", timeout=10).status_code == 404


# --- keys -----------------------------------------------------------------------------------


def test_anonymous_needs_no_key_and_function_level_is_the_default(toy, http):
    assert get(http, toy, "/api/items/special").status_code == 200
    response = http.post(f"{toy.url}/api/hxt_echo", data=b"x", timeout=10)
    assert (response.status_code, response.content) == (401, b"")


@pytest.mark.parametrize(
    ("how", "key", "status"),
    [
        ("header", TOY_KEY, 201),
        ("query", TOY_KEY, 201),
        ("header", TOY_MASTER, 201),
        ("header", "wrong", 401),
        ("query", "", 401),
        ("header", TOY_KEY + "x", 401),
    ],
)
def test_function_level_takes_a_host_or_master_key_from_header_or_code(toy, http, how, key, status):
    kwargs = {"headers": {"x-functions-key": key}} if how == "header" else {"params": {"code": key}}
    response = http.post(f"{toy.url}/api/hxt_echo", data=b"x", timeout=10, **kwargs)
    assert response.status_code == status


def test_admin_level_takes_only_the_master_key(toy, http):
    as_host = get(http, toy, "/api/admin-op", headers={"x-functions-key": TOY_KEY})
    assert (as_host.status_code, as_host.content) == (401, b"")
    assert served_by(get(http, toy, "/api/admin-op", params={"code": TOY_MASTER})) == "hxt_admin"


# --- request and response -------------------------------------------------------------------


def test_request_reaches_main_as_an_http_request_and_the_response_comes_back(toy, http):
    response = http.post(
        f"{toy.url}/api/hxt_echo?b=2&a=1&a=3&empty=",
        data=b"payload",
        headers={"x-functions-key": TOY_KEY, "X-Test": "hello"},
        timeout=10,
    )
    assert response.status_code == 201
    assert response.headers["X-Echo"] == "yes"
    assert response.headers["Content-Type"] == "application/json"
    doc = response.json()
    assert doc == {
        "function": "hxt_echo",
        "method": "POST",
        "url": f"http://127.0.0.1:{toy.port}/api/hxt_echo?b=2&a=1&a=3&empty=",
        "route": {},
        "params": {"b": "2", "a": "1", "empty": ""},
        "body": "payload",
        "x_test": "hello",
    }


def test_chunked_body_is_read_whole(toy, http):
    response = http.post(
        f"{toy.url}/api/hxt_echo",
        data=iter([b"abc", b"", b"def"]),
        headers={"x-functions-key": TOY_KEY},
        timeout=10,
    )
    assert (response.status_code, response.json()["body"]) == (201, "abcdef")


def test_a_function_that_raises_answers_500_and_is_logged_with_a_traceback(toy, http, caplog):
    response = get(http, toy, "/api/boom")
    assert (response.status_code, response.content) == (500, b"")
    failed = [r for r in caplog.records if "Functions.hxt_boom" in r.getMessage()]
    assert failed
    assert failed[-1].levelno == logging.ERROR
    assert failed[-1].exc_info
    assert "kaboom" in caplog.text
    assert "Traceback" in caplog.text


def test_a_module_that_fails_to_import_answers_500_and_the_others_keep_working(toy, http):
    [broken] = [f for f in toy.http_functions if f.name == "hxt_broken"]
    assert broken.handler is None
    assert "HXT_BROKEN_SETTING" in (broken.load_error or "")
    assert get(http, toy, "/api/broken").status_code == 500
    assert get(http, toy, "/api/items/special").status_code == 200


# --- body limits ----------------------------------------------------------------------------


def test_content_length_over_the_limit_is_413_before_the_body_is_sent(toy):
    # Only the head goes out: a host that tried to read the body would wait, and time out.
    answer = raw_exchange(
        toy.port,
        b"POST /api/hxt_echo HTTP/1.1\r\nHost: x\r\n"
        + f"x-functions-key: {TOY_KEY}\r\nContent-Length: {TOY_LIMIT + 1}\r\n\r\n".encode(),
    )
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"\r\nConnection: close\r\n" in answer


def test_a_client_that_sends_an_oversized_body_still_gets_its_413(toy, http):
    url = f"{toy.url}/api/hxt_echo"
    headers = {"x-functions-key": TOY_KEY}
    assert http.post(url, data=b"x" * 64 * 1024, headers=headers, timeout=10).status_code == 413
    chunked = iter([b"x" * 3000, b"y" * 3000])
    assert http.post(url, data=chunked, headers=headers, timeout=10).status_code == 413
    assert http.post(url, data=b"x" * TOY_LIMIT, headers=headers, timeout=10).status_code == 201


def test_expect_100_continue_only_when_the_body_will_be_read(toy):
    head = "POST /api/hxt_echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nConnection: close\r\n"
    no_key = raw_exchange(toy.port, f"{head}Content-Length: 2\r\n\r\n".encode())
    assert no_key.startswith(b"HTTP/1.1 401 ")  # refused at once, no 100 first
    keyed = f"{head}x-functions-key: {TOY_KEY}\r\n"
    too_big = raw_exchange(toy.port, f"{keyed}Content-Length: {TOY_LIMIT + 1}\r\n\r\n".encode())
    assert too_big.startswith(b"HTTP/1.1 413 ")
    with socket.create_connection(("127.0.0.1", toy.port), timeout=5) as sock:
        sock.sendall(f"{keyed}Content-Length: 2\r\n\r\n".encode())
        assert sock.recv(1024) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hi")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 201 ")
    assert answer.endswith(b'"x_test": null}')
    assert b'"body": "hi"' in answer


# --- the real ingest function ---------------------------------------------------------------


@pytest.fixture(scope="module")
def ingest_host() -> Iterator[HttpHost]:
    with HttpHost(ROOT, keys=[INGEST_KEY], port=0, max_request_body_bytes=INGEST_LIMIT) as host:
        yield host


@pytest.fixture
def hub(monkeypatch) -> InMemoryPublisher:
    publisher = InMemoryPublisher()
    monkeypatch.setattr(ingest_function, "_app", IngestApp(publisher))
    return publisher


def reading_body(device: str = "pump-0007") -> bytes:
    ts = datetime.now(UTC) - timedelta(seconds=30)
    return json.dumps(
        {"device_id": device, "timestamp": format_timestamp(ts), "metrics": {"temperature_c": 70.5}}
    ).encode()


def post_reading(host: HttpHost, http: requests.Session, **kwargs) -> requests.Response:
    headers = {"content-type": "application/json", **kwargs.pop("headers", {})}
    return http.post(
        f"{host.url}/api/readings", data=reading_body(), headers=headers, timeout=10, **kwargs
    )


def test_ingest_without_a_key_is_401_and_publishes_nothing(ingest_host, http, hub):
    response = post_reading(ingest_host, http)
    assert (response.status_code, response.content) == (401, b"")
    wrong = post_reading(ingest_host, http, headers={"x-functions-key": "not-the-key"})
    assert (wrong.status_code, wrong.content) == (401, b"")
    assert hub.events == []


def test_ingest_with_the_key_in_the_header_is_202_and_the_event_is_published(
    ingest_host, http, hub
):
    response = post_reading(ingest_host, http, headers={"x-functions-key": INGEST_KEY})
    assert (response.status_code, response.json()) == (202, {"accepted": 1, "events": 1})
    assert [e.partition_key for e in hub.events] == ["pump-0007"]


def test_ingest_with_the_key_as_code_is_202(ingest_host, http, hub):
    response = post_reading(ingest_host, http, params={"code": INGEST_KEY})
    assert (response.status_code, response.json()) == (202, {"accepted": 1, "events": 1})
    assert len(hub.events) == 1


def test_ingest_over_the_host_limit_is_413_without_reading_the_body(ingest_host, hub):
    answer = raw_exchange(
        ingest_host.port,
        b"POST /api/readings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"x-functions-key: {INGEST_KEY}\r\nContent-Length: {INGEST_LIMIT + 1}\r\n\r\n".encode(),
    )
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert hub.events == []


def test_ingest_get_is_404_because_the_route_allows_post_only(ingest_host, http, hub):
    response = http.get(f"{ingest_host.url}/api/readings", params={"code": INGEST_KEY}, timeout=10)
    assert (response.status_code, response.content) == (404, b"")


def test_the_key_never_reaches_the_logs(ingest_host, http, hub, caplog):
    caplog.set_level(logging.DEBUG, logger="local")
    assert post_reading(ingest_host, http, params={"code": INGEST_KEY}).status_code == 202
    assert (
        post_reading(ingest_host, http, headers={"x-functions-key": INGEST_KEY}).status_code == 202
    )
    assert post_reading(ingest_host, http, params={"code": "wrong"}).status_code == 401
    raw_exchange(
        ingest_host.port, f"GET /api/readings?code={INGEST_KEY} HTTP/1.1 junk\r\n\r\n".encode()
    )
    assert '"POST /api/readings?code=[redacted]" 202' in caplog.text
    assert INGEST_KEY not in caplog.text


# --- settings, units and the command line ---------------------------------------------------


def test_settings_fill_the_environment_but_never_override_it(tmp_path):
    path = tmp_path / "local.settings.json"
    path.write_text(
        json.dumps(
            {
                "IsEncrypted": False,
                "Values": {"A": "file", "B": "file", "C": ""},
                "Host": {"LocalHttpPort": 7072},
            }
        )
    )
    settings = load_local_settings(path)
    environ = {"A": "env", "B": ""}
    assert apply_settings(settings.values, environ) == ["A"]
    assert environ == {"A": "env", "B": "file", "C": ""}
    assert settings.local_http_port == 7072
    path.write_text(json.dumps({"IsEncrypted": True, "Values": {}}))
    with pytest.raises(AppConfigError, match="IsEncrypted"):
        load_local_settings(path)


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        ("a/{b?}/{c?}", "/api/a", {}),
        ("a/{b?}/{c?}", "/api/a/x/y", {"b": "x", "c": "y"}),
        ("a/{n:int=5}", "/api/a", {"n": "5"}),
        ("a/{n:int:range(1,10)}", "/api/a/11", None),
        ("a/{n:long}", "/api/a/9223372036854775807", {"n": "9223372036854775807"}),
        ("a/{n:int}", "/api/a/2147483648", None),
        (
            "a/{g:guid}",
            "/api/a/3F2504E0-4F89-11D3-9A0C-0305E82C3301",
            {"g": "3F2504E0-4F89-11D3-9A0C-0305E82C3301"},
        ),
        ("a/{ok:bool}", "/api/a/TRUE", {"ok": "TRUE"}),
        ("a/{s:length(2,3)}", "/api/a/abcd", None),
        ("f/{name}.{ext?}", "/api/f/a.b.c", {"name": "a.b", "ext": "c"}),
        ("f/{name}.{ext?}", "/api/f/readme", {"name": "readme"}),
        ("{{a}}/{b}", "/api/{a}/x", {"b": "x"}),
        ("a/{p:regex(^x/y$)}", "/api/a/x%2Fy", None),
    ],
)
def test_route_templates_match_like_aspnet_core(template, path, expected):
    assert compile_route(template, prefix="api").match(path) == expected


@pytest.mark.parametrize(
    "template", ["a//b", "{a}{b}", "{*a}/b", "{a:nosuch}", "{a", "a}", "{a}/{A}", "{*a?}"]
)
def test_templates_the_host_rejects_are_rejected(template):
    with pytest.raises(RouteTemplateError):
        compile_route(template)


def test_routes_sort_in_the_hosts_order():
    templates = ["items/{id}", "items/special", "{*all}", "items/{id:int}", "items", "items/{id}/x"]
    routes = sort_routes([compile_route(t, prefix="api") for t in templates], lambda r: r)
    assert [r.template for r in routes] == [
        "api/items/special",
        "api/items/{id:int}",
        "api/items/{id}/x",
        "api/items/{id}",
        "api/items",
        "api/{*all}",
    ]


def test_redact_hides_code_in_any_case():
    assert redact("/a?x=1&Code=s3cr3t&y=2") == "/a?x=1&Code=[redacted]&y=2"


def test_command_line_applies_settings_before_import_and_stops_on_sigterm(toy_app, tmp_path):
    settings = tmp_path / "local.settings.json"
    settings.write_text(json.dumps({"Values": {"HXT_BROKEN_SETTING": "from-settings"}}))
    env = {
        k: v for k, v in os.environ.items() if k not in ("FUNCTIONS_KEY", "FUNCTIONS_MASTER_KEY")
    }
    command = [sys.executable, "-m", "local.host", "--app-root", str(toy_app), "--port", "0"]
    lines: queue.Queue[str | None] = queue.Queue()
    with (
        (tmp_path / "stderr.txt").open("w+") as stderr,
        subprocess.Popen(
            [*command, "--settings", str(settings)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        ) as proc,
        requests.Session() as http,
    ):
        pump = threading.Thread(target=forward_lines, args=(proc.stdout, lines))
        pump.start()
        try:
            banner = read_until(lines, "Host key")
            key = banner.rsplit(": ", 1)[1].strip()
            url = re.search(r"hxt_echo: \[POST\] (http://127\.0\.0\.1:\d+)/api/hxt_echo", banner)
            assert url, banner
            assert "hxt_timer: skipped (timerTrigger)" in banner
            base = url.group(1)
            assert http.get(f"{base}/api/broken", timeout=10).text == "from-settings"
            echo = http.post(f"{base}/api/hxt_echo", headers={"x-functions-key": key}, timeout=10)
            assert echo.status_code == 201
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            pump.join(timeout=10)
        assert "Host stopped." in read_until(lines, None)
        stderr.seek(0)
        assert key not in stderr.read()


def forward_lines(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def read_until(lines: queue.Queue[str | None], marker: str | None, timeout: float = 20.0) -> str:
    """Collect output lines until one holds `marker` (None: until the end), within `timeout`."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while True:
        line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        if line is None:
            if marker is None:
                return "".join(seen)
            raise AssertionError(f"output ended before {marker!r}: {''.join(seen)}")
        seen.append(line)
        if marker is not None and marker in line:
            return "".join(seen)


def test_the_body_limit_comes_from_the_flag_then_azures_setting_then_100_mb(monkeypatch):
    from local.host import AppConfigError
    from local.host.__main__ import _body_limit

    monkeypatch.delenv("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT", raising=False)
    assert _body_limit(None) == 104_857_600
    monkeypatch.setenv("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT", "1048576")
    assert _body_limit(None) == 1_048_576
    assert _body_limit(5000) == 5000
    for bad in ("1MB", "²", "0", "-5", "1.5", "١٢"):
        monkeypatch.setenv("FUNCTIONS_REQUEST_BODY_SIZE_LIMIT", bad)
        with pytest.raises(AppConfigError, match="FUNCTIONS_REQUEST_BODY_SIZE_LIMIT"):
            _body_limit(None)
    for bad_flag in (0, -1):
        with pytest.raises(AppConfigError, match="--max-request-body-bytes"):
            _body_limit(bad_flag)
    assert _body_limit(1) == 1
