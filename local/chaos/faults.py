"""A fault-injecting HTTP proxy in front of the local AML inference server, for the chaos run.

The scoring client's retry, back-off and poison-splitting paths only run when AML misbehaves,
and the local ``azmlinfsrv`` never does. Managed online endpoints document these transient
answers: 429 with ``Retry-After`` when more than 2 × max_concurrent_requests_per_instance
requests are in flight, 503 when no deployment is healthy, and plain connection failures. A
model can also refuse a request with a 400 naming the offending field. The proxy forwards
everything to the real server and, on ``POST /score`` only, answers like that when told to.

``GET /`` (the liveness route) and every other request are always forwarded, even while "down",
so a readiness probe through the proxy keeps working and the chaos run can tell "endpoint
failing" from "nothing listening". Bodies imitate AML's shape (JSON text), not its exact words.
An unreachable upstream gets 502 with a JSON body, which the scoring client treats as transient.

Example::

    with FaultProxy("http://127.0.0.1:5001", seed=7) as proxy:
        proxy.flaky(share_503=0.1, share_429=0.2, retry_after=1.5)
        client = AmlClient(proxy.score_url, key)
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import random
import socket
import threading
import time
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import urlsplit

__all__ = ["FaultProxy"]

log = logging.getLogger(__name__)

_Answer = tuple[int, list[tuple[str, str]], bytes]
_REFUSE: Literal["refuse"] = "refuse"


def _stamps(device: dict[str, Any]) -> list[str]:
    """A scoring request's device's reading times as sent: contract 2's column, or contract 1's."""
    if "timestamps" in device:
        return list(device["timestamps"])
    return [r["timestamp"] for r in device["readings"]]


# Hop-by-hop headers belong to one connection; Content-Length is recomputed; send_response
# writes its own Server and Date, so the upstream's would be duplicates.
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te"}
_HOP_BY_HOP |= {"trailer", "trailers", "transfer-encoding", "upgrade"}
_NOT_FORWARDED = frozenset(_HOP_BY_HOP | {"host", "content-length"})
_NOT_RETURNED = _NOT_FORWARDED | {"server", "date"}
_COUNTS = ("forwarded", "injected_503", "injected_429", "down", "rejected")
_UPSTREAM_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class _Mode:
    share_503: float = 0.0
    share_429: float = 0.0
    retry_after: float = 1.0
    down: bool = False
    refuse: bool = False
    hold: float = 0.0  # seconds a forwarded call waits before it goes upstream


def _json_answer(status: int, doc: dict[str, str], *headers: tuple[str, str]) -> _Answer:
    return status, [("Content-Type", "application/json"), *headers], json.dumps(doc).encode()


def _end_to_end(headers: Message, drop: frozenset[str]) -> list[tuple[str, str]]:
    """Headers minus `drop` and whatever the message's own Connection header names."""
    named = {t.strip().lower() for t in (headers.get("Connection") or "").split(",")}
    return [(k, v) for k, v in headers.items() if k.lower() not in drop and k.lower() not in named]


def _first_device(body: bytes, prefix: str) -> int | None:
    """Index in the request's "devices" of the first device whose id starts with `prefix`."""
    try:
        doc = json.loads(body)
    except ValueError:  # not JSON: the model would refuse it on its own
        return None
    devices = doc.get("devices") if isinstance(doc, dict) else None
    for i, device in enumerate(devices if isinstance(devices, list) else []):
        if isinstance(device, dict) and str(device.get("device_id", "")).startswith(prefix):
            return i
    return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 5  # an idle keep-alive connection gives its thread back instead of holding it
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stall
    server: _Server
    _upstream: http.client.HTTPConnection | None = None

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _serve(self) -> None:
        body = self._read_body()  # always, so the next request on this connection parses
        answer = self.server.proxy._decide(self.command, self.path, body)
        if answer == _REFUSE:
            self.close_connection = True  # hang up without a status line
            return
        if answer is None and (hold := self.server.proxy._hold_for(self.command, self.path)):
            time.sleep(hold)  # a slow model: the caller's invocation stays in flight this long
        status, headers, data = answer or self._forward(body)
        if answer is None and status == 200:
            self.server.proxy._note_scored(self.command, self.path, body)
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

    def _read_body(self) -> bytes:
        if "chunked" not in (self.headers.get("Transfer-Encoding") or "").lower():
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0], 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
            pass
        return b"".join(chunks)

    def _forward(self, body: bytes) -> _Answer:
        """Send the request upstream over this connection's own keep-alive HTTPConnection."""
        for fresh in (self._upstream is None, True):
            try:
                return self._exchange(body)
            except (OSError, http.client.HTTPException) as exc:
                self._close_upstream()
                # A reused connection the upstream closed while idle is worth one fresh try.
                if fresh or not isinstance(exc, ConnectionResetError | BrokenPipeError):
                    log.warning("upstream unreachable: %s", type(exc).__name__)
                    doc = {"error": "upstream unreachable", "detail": type(exc).__name__}
                    return _json_answer(502, doc)
        raise AssertionError("unreachable: the second attempt is always fresh")

    def _exchange(self, body: bytes) -> _Answer:
        proxy = self.server.proxy
        if self._upstream is None:
            self._upstream = http.client.HTTPConnection(
                proxy._up_host, proxy._up_port, timeout=_UPSTREAM_TIMEOUT
            )
        headers = dict(_end_to_end(self.headers, _NOT_FORWARDED))
        path = proxy._up_path + self.path
        self._upstream.request(self.command, path, body=body or None, headers=headers)
        resp = self._upstream.getresponse()
        data = resp.read()
        if resp.will_close:
            self._close_upstream()
        return resp.status, _end_to_end(resp.headers, _NOT_RETURNED), data

    def _close_upstream(self) -> None:
        if self._upstream is not None:
            self._upstream.close()
            self._upstream = None

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self._close_upstream()


class _Server(ThreadingHTTPServer):
    """Tracks open client connections so `stop` can wake handlers idling on keep-alive."""

    def __init__(self, address: tuple[str, int], proxy: FaultProxy) -> None:
        super().__init__(address, _Handler)
        self.proxy = proxy
        self._open: dict[socket.socket, threading.Thread] = {}
        self._open_lock = threading.Lock()

    def process_request(self, request: socket.socket, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), daemon=True
        )
        with self._open_lock:
            self._open[request] = thread
        thread.start()

    def shutdown_request(self, request: socket.socket) -> None:
        with self._open_lock:
            self._open.pop(request, None)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s failed", client_address, exc_info=True)

    def close_connections(self, timeout: float) -> None:
        """Shut every client socket (a blocked read returns EOF), then join, bounded."""
        with self._open_lock:
            open_now = list(self._open.items())
        for sock, _ in open_now:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for _, thread in open_now:
            thread.join(max(0.0, deadline - time.monotonic()))


class FaultProxy:
    """Forwards HTTP to an upstream base URL; injects AML-style faults on POST /score."""

    def __init__(self, upstream: str, *, port: int = 0, seed: int = 0) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be an http:// URL, got {upstream!r}")
        self.upstream = upstream
        self._up_host, self._up_port = parts.hostname, parts.port or 80
        self._up_path = parts.path.rstrip("/")
        self._port = port
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._mode = _Mode()
        self._reject: str | None = None
        self._counts = dict.fromkeys(_COUNTS, 0)
        self._scored: Counter[tuple[str, str]] = Counter()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Listen on 127.0.0.1 and serve from a daemon thread."""
        if self._server is not None:
            raise RuntimeError("FaultProxy is already started")
        self._server = _Server(("127.0.0.1", self._port), self)
        self._port = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        log.info("fault proxy %s -> %s", self.url, self.upstream)

    def stop(self) -> None:
        """Stop accepting, hang up on open (keep-alive) connections, close; idempotent."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._server = self._thread = None
        server.shutdown()
        server.close_connections(timeout=2.0)
        server.server_close()
        thread.join()

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL clients use instead of the upstream's."""
        if not self._port:
            raise RuntimeError("FaultProxy with port=0 has no URL until start()")
        return f"http://127.0.0.1:{self._port}"

    @property
    def score_url(self) -> str:
        """The scoring route through the proxy."""
        return self.url + "/score"

    def healthy(self) -> None:
        """Forward everything unchanged (device rejection, if set, stays on)."""
        self._set_mode(_Mode())

    def flaky(self, *, share_503: float, share_429: float, retry_after: float = 1.0) -> None:
        """_Answer a random share of POST /score with 503, another with 429 and Retry-After."""
        if not (0 <= share_503 <= 1 and 0 <= share_429 <= 1 and share_503 + share_429 <= 1):
            raise ValueError(f"shares must be in [0, 1] with sum <= 1: {share_503}, {share_429}")
        if not (math.isfinite(retry_after) and retry_after >= 0):
            raise ValueError(f"retry_after must be >= 0 seconds, got {retry_after}")
        self._set_mode(_Mode(share_503=share_503, share_429=share_429, retry_after=retry_after))

    def down(self, *, refuse: bool = False) -> None:
        """Every POST /score gets 503 (no healthy deployment), or a hang-up with `refuse`."""
        self._set_mode(_Mode(down=True, refuse=refuse))

    def hold(self, seconds: float) -> None:
        """Forward every POST /score only after `seconds` (0 stops holding); faults stay off.

        A held call keeps the score host's invocation in flight, so a kill lands mid-batch.
        """
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"hold must be >= 0 seconds, got {seconds}")
        self._set_mode(_Mode(hold=seconds))

    def _hold_for(self, method: str, path: str) -> float:
        if method != "POST" or urlsplit(path).path != "/score":
            return 0.0
        with self._lock:
            return self._mode.hold

    def reject_devices(self, prefix: str | None) -> None:
        """_Answer 400 naming the first device whose id starts with `prefix`; None turns it off."""
        with self._lock:
            self._reject = prefix
        log.info("fault proxy rejects devices starting with %r", prefix)

    def counts(self) -> dict[str, int]:
        """How POST /score calls were answered so far (other routes are not counted)."""
        with self._lock:
            return dict(self._counts)

    def scored(self) -> Counter[tuple[str, str]]:
        """How often each reading (device id, timestamp as sent) was scored successfully.

        A count over 1 is a redelivery the pipeline absorbed: the chaos run reports them, so
        "stored once" is shown to hold for readings that really were processed twice.
        """
        with self._lock:
            return Counter(self._scored)

    def _note_scored(self, method: str, path: str, body: bytes) -> None:
        if method != "POST" or urlsplit(path).path != "/score":
            return
        try:
            devices = json.loads(body).get("devices") or []
            keys = [(d["device_id"], stamp) for d in devices for stamp in _stamps(d)]
        except (ValueError, AttributeError, KeyError, TypeError):
            return  # not a request this pipeline sends: nothing to count
        with self._lock:
            self._scored.update(keys)

    def _set_mode(self, mode: _Mode) -> None:
        with self._lock:
            self._mode = mode
        log.info("fault proxy mode: %s", mode)

    def _decide(self, method: str, path: str, body: bytes) -> _Answer | Literal["refuse"] | None:
        """The fault to answer instead of forwarding, or None to forward; counts either way."""
        if method != "POST" or urlsplit(path).path != "/score":
            return None
        with self._lock:
            mode, prefix, draw = self._mode, self._reject, self._rng.random()
        answer: _Answer | Literal["refuse"] | None = None
        if mode.down:
            kind = "down"
            doc = {"message": "No healthy deployment is available to serve the request."}
            answer = _REFUSE if mode.refuse else _json_answer(503, doc)
        elif draw < mode.share_503:
            kind = "injected_503"
            answer = _json_answer(503, {"message": "Service Unavailable: upstream is restarting."})
        elif draw < mode.share_503 + mode.share_429:
            kind = "injected_429"
            retry = ("Retry-After", str(math.ceil(mode.retry_after)))  # AML sends whole seconds
            answer = _json_answer(429, {"message": "Too many requests in flight."}, retry)
        elif prefix is not None and (index := _first_device(body, prefix)) is not None:
            kind, field = "rejected", f"devices[{index}].readings"
            answer = _json_answer(
                400, {"error": f"model refused a reading: {field}", "field": field}
            )
        else:
            kind = "forwarded"
        with self._lock:
            self._counts[kind] += 1
        return answer
