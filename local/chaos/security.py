"""Security probes against a running local stack: keys, injection, body limits, leaked secrets.

Each probe sends what a hostile or careless client would and returns a `Probe` record saying
what was sent, what came back and whether that was the right answer, so the chaos CLI can print
the records and tests can assert on them. Probes never put a secret in a record: a detail says
"the function key" or "a wrong key", never the value. Every answer a probe receives (status,
headers, body, or an SDK's error text) is kept, and `probe_error_bodies` checks that none of
them carries a secret of the run; `scan_logs` does the same for the processes' logs.

Example:
    >>> for probe in probe_all(stack):  # doctest: +SKIP
    ...     print("ok  " if probe.ok else "FAIL", probe.name, probe.detail)
"""

from __future__ import annotations

import json
import re
import secrets as _secrets
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from azure.eventhub import EventData, EventHubProducerClient
from azure.eventhub.exceptions import AuthenticationError, EventHubError

from local.demo.stack import Stack
from shared.readings import MAX_BODY_BYTES, format_timestamp

from .injection import probe_query_injection
from .probing import PROBE_DEVICE, Leak, Probe, Seen, Tally, send_raw

__all__ = [
    "Leak",
    "Probe",
    "probe_all",
    "probe_dashboard_keys",
    "probe_declared_oversize",
    "probe_error_bodies",
    "probe_eventhubs_wrong_key",
    "probe_ingest_keys",
    "probe_oversized_bodies",
    "probe_query_injection",
    "probe_query_keys",
    "scan_logs",
    "stack_secrets",
]

_PROMPT = 5.0  # a refusal before the body is sent must come within this
_HEADERS_END = b"\r\n\r\n"
# A key-bearing field with a value (a SAS token's `sig=` is as good as the key until it
# expires); a redaction marker is not a value.
_KEY_FIELD = re.compile(r"\b(SharedAccessKey|AccountKey|sig)=(?!\*+(?:[;&\s\"']|$))([^;&\s\"']+)")
_REDACTED = frozenset({"[redacted]", "<redacted>", "redacted", "REDACTED"})


# --- the run's secrets ----------------------------------------------------------------------


def stack_secrets(stack: Stack) -> dict[str, str]:
    """This run's secrets by name, read from the hosts' settings file (it holds all of them).

    Read from the file rather than the stack's private attributes: the file is what the hosts
    were given, so it is also what could leak.
    """
    values = json.loads(stack.settings_path.read_text())["Values"]
    eventhubs, storage = values["EVENTHUB_CONNECTION"], values["AzureWebJobsStorage"]
    found = {
        "function key": values["FUNCTIONS_KEY"],
        "Event Hubs SAS key": _field(eventhubs, "SharedAccessKey"),
        "Event Hubs connection string": eventhubs,
        "dashboard key": values["POWERBI_ACCESS_TOKEN"],
        "storage account key": _field(storage, "AccountKey"),
        "storage connection string": storage,
    }
    tables = values.get("TABLES_CONNECTION") or storage
    if tables != storage:
        found["tables account key"] = _field(tables, "AccountKey")
        found["tables connection string"] = tables
    return found


def _field(connection: str, name: str) -> str:
    for part in connection.split(";"):
        key, _, value = part.partition("=")
        if key.strip().lower() == name.lower():
            return value.strip()
    raise ValueError(f"the connection string has no {name}")


def _setting(stack: Stack, name: str) -> str:
    return str(json.loads(stack.settings_path.read_text())["Values"][name])


def _reading(device_id: str = PROBE_DEVICE) -> bytes:
    stamp = format_timestamp(datetime.now(UTC) - timedelta(seconds=30))
    doc = {"device_id": device_id, "timestamp": stamp, "metrics": {"temperature_c": 70.5}}
    return json.dumps(doc).encode()


def _wrong_key() -> str:
    return _secrets.token_urlsafe(24)


# --- 1, 2: keys on the HTTP functions -------------------------------------------------------


def probe_ingest_keys(stack: Stack, *, seen: Seen | None = None) -> Probe:
    """`POST /api/readings` with a valid body and no key, a wrong key, a near-miss: all 401."""
    seen = [] if seen is None else seen
    tally = Tally("ingest refuses requests without the function key")
    key, path = stack.function_key, urlsplit(stack.ingest_url).path
    json_type = {"Content-Type": "application/json"}
    for what, target, headers in [
        ("no key", path, json_type),
        ("a wrong x-functions-key", path, {**json_type, "x-functions-key": _wrong_key()}),
        ("a wrong ?code=", f"{path}?code={_wrong_key()}", json_type),
        ("an empty ?code=", f"{path}?code=", json_type),
        ("the key minus its last character", path, {**json_type, "x-functions-key": key[:-1]}),
        ("the key plus one character as ?code=", f"{path}?code={key}x", json_type),
    ]:
        answer = send_raw(stack.api_url, "POST", target, headers=headers, body=_reading())
        seen.append(answer.text())
        tally.expect(f"POST {path} with {what}", answer, 401)
        if key.encode() in answer.body:
            tally.failures.append(f"the 401 to {what} holds the function key")
    return tally.probe()


def probe_query_keys(stack: Stack, *, seen: Seen | None = None) -> Probe:
    """Both query routes (`function.json`: `{collection}/{device_id?}/{view?}`) need the key."""
    seen = [] if seen is None else seen
    tally = Tally("query refuses requests without the function key")
    base = urlsplit(stack.api_url).path
    for target in [f"{base}/devices/{PROBE_DEVICE}/predictions", f"{base}/anomalies"]:
        for what, suffix, headers in [
            ("no key", "", {}),
            ("a wrong x-functions-key", "", {"x-functions-key": _wrong_key()}),
            ("a wrong ?code=", f"?code={_wrong_key()}", {}),
        ]:
            answer = send_raw(stack.api_url, "GET", target + suffix, headers=headers)
            seen.append(answer.text())
            tally.expect(f"GET {target} with {what}", answer, 401)
    return tally.probe()


# --- 4: oversized ingest ---------------------------------------------------------------------


def probe_declared_oversize(stack: Stack, *, seen: Seen | None = None) -> Probe:
    """A keyed `Content-Length: 50000000` and no body: a 413 promptly, before any body byte.

    The contract's limit is 1 MiB; a host that waits for 50 MB before refusing lets a client
    hold a connection (and a thread) with a few bytes of headers.
    """
    seen = [] if seen is None else seen
    url = urlsplit(stack.ingest_url)
    status, head, seconds = _headers_only(
        url.hostname or "127.0.0.1",
        url.port or 80,
        f"POST {url.path} HTTP/1.1\r\nHost: {url.netloc}\r\n"
        "Content-Type: application/json\r\n"
        f"x-functions-key: {stack.function_key}\r\n"
        "Content-Length: 50000000\r\n\r\n",
    )
    seen.append(head)
    name = "ingest refuses a declared 50 MB body before reading it"
    said = f"POST {url.path} with the key, Content-Length: 50000000 and no body ->"
    if status == 413 and seconds <= _PROMPT:
        return Probe(name, True, f"{said} 413 in {seconds:.2f} s")
    got = f"no answer in {seconds:.1f} s" if status is None else f"{status} in {seconds:.2f} s"
    return Probe(name, False, f"{said} {got}; expected 413 within {_PROMPT:g} s")


def probe_oversized_bodies(stack: Stack, *, seen: Seen | None = None) -> Probe:
    """Bodies over the 1 MiB ingest limit, chunked or with their length, are answered 413."""
    seen = [] if seen is None else seen
    tally = Tally("ingest refuses bodies over 1 MiB")
    path = urlsplit(stack.ingest_url).path
    key = {"Content-Type": "application/json", "x-functions-key": stack.function_key}
    half = b" " * (MAX_BODY_BYTES // 2 + 1)
    for what, body, chunked in [
        ("a chunked body of 1 MiB + 2 bytes", [half, half], True),
        ("a 1 MiB + 1 byte body with its Content-Length", b" " * (MAX_BODY_BYTES + 1), False),
    ]:
        answer = send_raw(stack.api_url, "POST", path, headers=key, body=body, chunked=chunked)
        seen.append(answer.text())
        tally.expect(f"POST {path} with the key and {what} ({answer.seconds:.2f} s)", answer, 413)
    return tally.probe()


def _headers_only(host: str, port: int, head: str) -> tuple[int | None, str, float]:
    """Send a request head and no body; return the status (None: no answer in time)."""
    started = time.monotonic()
    received = b""
    with socket.create_connection((host, port), timeout=_PROMPT) as sock:
        sock.sendall(head.encode())
        try:
            while _HEADERS_END not in received:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except TimeoutError:
            return None, received.decode("latin-1"), time.monotonic() - started
    seconds = time.monotonic() - started
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", received)
    return (int(match.group(1)) if match else None), received.decode("latin-1"), seconds


# --- 5: Event Hubs SAS ------------------------------------------------------------------------


def probe_eventhubs_wrong_key(stack: Stack, *, seen: Seen | None = None) -> Probe:
    """The emulator refuses a SAS token signed with a wrong key, and stores nothing from it.

    The unmodified SDK signs the token; `retry_total=0` so the refusal surfaces at once. The
    partition's last sequence number, read with the right key, must not move.
    """
    seen = [] if seen is None else seen
    right, hub = _setting(stack, "EVENTHUB_CONNECTION"), _setting(stack, "EVENTHUB_NAME")
    wrong = right.replace(_field(right, "SharedAccessKey"), _wrong_key())
    partition = "0"
    before = _last_sequence(right, hub, partition)
    started = time.monotonic()
    try:
        with EventHubProducerClient.from_connection_string(
            wrong, eventhub_name=hub, retry_total=0
        ) as client:
            client.send_batch([EventData(f"chaos-{_secrets.token_hex(8)}")], partition_id=partition)
        outcome = "sent"
    except EventHubError as exc:  # AuthenticationError is one
        seen.append(f"{type(exc).__name__}: {exc}")
        outcome = type(exc).__name__
        if not isinstance(exc, AuthenticationError):
            outcome += f" (not an authentication error: {str(exc)[:200]})"
    seconds = time.monotonic() - started
    after = _last_sequence(right, hub, partition)
    said = (
        f"send_batch to {hub}/{partition} with a wrong SharedAccessKey, retry_total=0 -> "
        f"{outcome} in {seconds:.2f} s; the partition's last sequence number {before} -> {after}"
    )
    ok = outcome == "AuthenticationError" and before == after
    return Probe(
        "Event Hubs refuses a SAS token signed with a wrong key",
        ok,
        said if ok else f"{said}; expected AuthenticationError and no new event",
    )


def _last_sequence(connection: str, hub: str, partition: str) -> int:
    with EventHubProducerClient.from_connection_string(connection, eventhub_name=hub) as client:
        return int(client.get_partition_properties(partition)["last_enqueued_sequence_number"])


# --- 6: the dashboard's push API --------------------------------------------------------------


def probe_dashboard_keys(stack: Stack, *, seen: Seen | None = None) -> Probe:
    """Push-rows without the dashboard key, or with a wrong one: 401/403 and no row stored.

    Power BI (and the stand-in) answer 401 without a bearer token, 403 with a wrong one, and
    403 for a push URL whose `key` is missing or wrong. The key in the wrong place is refused
    too (and must not reach the dashboard's log: `scan_logs` looks).
    """
    seen = [] if seen is None else seen
    tally = Tally("dashboard refuses rows without its key")
    key = _setting(stack, "POWERBI_ACCESS_TOKEN")
    device = f"chaos-probe-{_secrets.token_hex(4)}"
    window = format_timestamp(datetime.now(UTC).replace(second=0, microsecond=0))
    row = {
        **{"device_id": device, "window_start": window, "last_timestamp": window},
        **{"readings": 1, "anomalies": 0, "maintenance_due": False},
        **dict.fromkeys(("mean_anomaly_score", "max_anomaly_score"), 0.1),
        **dict.fromkeys(("failure_probability", "max_failure_probability"), 0.1),
    }
    rest = f"/v1.0/myorg/datasets/{stack.dataset_id}/tables/DeviceAggregates/rows"
    push = f"/beta/tenant/datasets/{stack.dataset_id}/rows"
    rows, bare = json.dumps({"rows": [row]}).encode(), json.dumps([row]).encode()

    def auth(value: str) -> dict[str, str]:
        return {"Content-Type": "application/json", "Authorization": value}

    plain = {"Content-Type": "application/json"}
    for what, target, headers, body, status in [
        ("REST rows, no Authorization", rest, plain, rows, 401),
        ("REST rows, Bearer <wrong>", rest, auth(f"Bearer {_wrong_key()}"), rows, 403),
        ("REST rows, Bearer <key minus a character>", rest, auth(f"Bearer {key[:-1]}"), rows, 403),
        ("REST rows, Basic <key>", rest, auth(f"Basic {key}"), rows, 401),
        ("REST rows, the key as ?key=", f"{rest}?key={key}", plain, rows, 401),
        ("push URL, no key", push, plain, bare, 403),
        ("push URL, ?key=<wrong>", f"{push}?key={_wrong_key()}", plain, bare, 403),
        ("push URL, the key as a bearer token", push, auth(f"Bearer {key}"), bare, 403),
    ]:
        answer = send_raw(stack.dashboard_url, "POST", target, headers=headers, body=body)
        seen.append(answer.text())
        tally.expect(what, answer, status)
    if stored := _dashboard_rows(stack.dashboard_db, device):
        tally.failures.append(f"{stored} row(s) of the probe's device were stored")
    else:
        tally.checked.append("no row of the probe's device stored")
    return tally.probe()


def _dashboard_rows(db: Path, device: str) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        sql = "SELECT COUNT(*) FROM rows WHERE device_id = ?"
        (count,) = conn.execute(sql, (device,)).fetchone()
    return int(count)


# --- 7: secrets in answers -------------------------------------------------------------------


def probe_error_bodies(stack: Stack, seen: Iterable[str]) -> Probe:
    """No answer the other probes received (status, headers, body, SDK error) holds a secret."""
    answers, secrets = list(seen), stack_secrets(stack)
    found = sorted({name for text in answers for name, value in secrets.items() if value in text})
    found += sorted({f"{m.group(1)}=" for text in answers for m in _key_fields(text)})
    name = "answers never carry a secret"
    if found:
        return Probe(name, False, f"{len(answers)} answers checked; found: {', '.join(found)}")
    return Probe(
        name,
        True,
        f"{len(answers)} answers checked for {len(secrets)} secrets and for "
        "SharedAccessKey=, AccountKey= and sig= with a value",
    )


# --- logs -------------------------------------------------------------------------------------


def scan_logs(paths: Iterable[Path], secrets: Mapping[str, str]) -> list[Leak]:
    """Every log line holding a secret, or a `SharedAccessKey=`/`AccountKey=`/`sig=` value.

    Any key-bearing field with a value is flagged, not only this run's keys: a log outlives
    the run. `secrets` maps a name to a value (e.g. `stack_secrets(stack)`) because a `Leak`
    reports the name, never the value. A redaction marker (`***`, `[redacted]`) is no value.

    Example:
        >>> scan_logs([Path("http-host.log")], {"function key": "k3y"})  # doctest: +SKIP
        [Leak(path=PosixPath('http-host.log'), line_number=12, what='function key')]
    """
    wanted = {name: value for name, value in secrets.items() if value}
    leaks = []
    for path in paths:
        with Path(path).open(encoding="utf-8", errors="replace") as lines:
            for number, line in enumerate(lines, start=1):
                found = [name for name, value in wanted.items() if value in line]
                found += sorted({f"{m.group(1)}= with a value" for m in _key_fields(line)})
                leaks.extend(Leak(Path(path), number, what) for what in found)
    return leaks


def _key_fields(text: str) -> Iterator[re.Match[str]]:
    return (m for m in _KEY_FIELD.finditer(text) if m.group(2) not in _REDACTED)


# --- all of them -------------------------------------------------------------------------------


def probe_all(stack: Stack) -> list[Probe]:
    """Run every probe against the running `stack`, the answers check last."""
    seen: Seen = []
    probes: list[Callable[..., Probe]] = [
        probe_ingest_keys,
        probe_query_keys,
        probe_query_injection,
        probe_declared_oversize,
        probe_oversized_bodies,
        probe_eventhubs_wrong_key,
        probe_dashboard_keys,
    ]
    results = [_guarded(probe, stack, seen) for probe in probes]
    return [*results, probe_error_bodies(stack, seen)]


def _guarded(probe: Callable[..., Probe], stack: Stack, seen: Seen) -> Probe:
    """A probe that raised is a failed probe, not the end of the report."""
    try:
        return probe(stack, seen=seen)
    except Exception as exc:
        name = (probe.__doc__ or probe.__name__).strip().splitlines()[0]
        return Probe(probe.__name__, False, f"{name}: raised {type(exc).__name__}: {exc}"[:500])
