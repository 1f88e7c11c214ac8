"""HTTP triggers served on 127.0.0.1 the way the Azure Functions host serves them.

Per request, in the host's order:

1. **Route.** Functions are tried in the host's route order (see `local.host.routes`); a route
   matches when its template, its constraints *and* its `methods` match. `methods` is a route
   constraint in the host, so a known path with a method no function allows is a **404** with
   an empty body, not a 405 (Azure/azure-functions-host#10098 asks for 405; still open).
2. **Key.** `authLevel` `function` (the default when absent) takes any host key or the master
   key; `admin` takes only the master key; `anonymous` takes nothing. The key comes from the
   `x-functions-key` header or the `code` query parameter and is compared in constant time.
   A missing or wrong key is a 401 with an empty body. (Core Tools skips keys when run
   locally; this host enforces them as Azure does, so key handling is tested before deploy.)
3. **Body.** A `Content-Length` over the limit is refused with 413 before any body byte is read;
   a chunked body is read up to the same limit. The default limit is the documented HTTP
   trigger request limit, 100 MB (104,857,600 bytes).
4. **Call.** The function gets an `azure.functions.HttpRequest` under its trigger binding's
   name; what it returns (or sets on a named `http` output) becomes the response, with the
   Content-Type the Python worker would send. An exception is logged with the function name
   and traceback and answered 500 with an empty body, like the host.

`GET /<routePrefix>/openapi.json` answers the app root's `openapi.json`, without a key, when
the file exists (a local convenience: the Azure host serves no such document).

Function modules are imported at `start()` with the app root on `sys.path`: a module that fails
to import is reported then, with its traceback, and its function answers 500 while the others
keep working. Keys never reach the logs; request lines are logged with `code=` redacted.

Example:
    >>> with HttpHost("path/to/app", keys=["k"], port=0) as host:  # doctest: +SKIP
    ...     requests.post(f"{host.url}/api/readings", headers={"x-functions-key": "k"}, json=r)
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import importlib
import inspect
import logging
import re
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import azure.functions as func

from . import AppConfigError, FunctionConfig, discover_functions, is_disabled, load_host_config
from .routes import RouteTemplate, RouteTemplateError, compile_route, sort_routes

__all__ = [
    "AUTH_LEVELS",
    "DEFAULT_MAX_REQUEST_BODY_BYTES",
    "FUNCTION_KEY_HEADER",
    "FUNCTION_KEY_QUERY",
    "OPENAPI_FILE",
    "HttpFunction",
    "HttpHost",
    "redact",
]

log = logging.getLogger(__name__)

# "The HTTP request length is limited to 100 MB (104,857,600 bytes)" (HTTP trigger docs, Limits).
DEFAULT_MAX_REQUEST_BODY_BYTES = 104_857_600
FUNCTION_KEY_HEADER = "x-functions-key"
FUNCTION_KEY_QUERY = "code"
AUTH_LEVELS = ("anonymous", "function", "admin")
OPENAPI_FILE = "openapi.json"
BIND_ADDRESS = "127.0.0.1"

_IDLE_TIMEOUT_SECONDS = 120.0  # an idle keep-alive connection is closed after this
_DRAIN_MAX_BYTES = 1 << 20  # after an early answer, read at most this much before closing
_DRAIN_SECONDS = 1.0
_MAX_CHUNK_LINE = 4096
_CODE_IN_QUERY = re.compile(r"(?i)([?&]code=)[^&#\s'\"]*")

T = TypeVar("T")
Reply = tuple[int, list[tuple[str, str]], bytes]


def redact(text: str) -> str:
    """`/api/x?code=secret&a=1` -> `/api/x?code=[redacted]&a=1`: what may reach a log."""
    return _CODE_IN_QUERY.sub(r"\1[redacted]", text)


class _Out(func.Out[T]):
    """The value a function sets on a named output binding (`res: func.Out[HttpResponse]`)."""

    def __init__(self) -> None:
        self._value: T | None = None

    def set(self, val: T) -> None:
        """Keep the value; the host reads it after the call."""
        self._value = val

    def get(self) -> T | None:
        """The value set, or None."""
        return self._value


@dataclass
class HttpFunction:
    """An HTTP-triggered function as the host sees it: route, methods, key level, code."""

    name: str
    route: RouteTemplate
    methods: frozenset[str] | None  # upper case; None = every method
    auth_level: str
    binding_name: str
    out_binding: str | None  # "$return", a binding name, or None without an http output
    module_name: str
    entry_point: str = "main"
    handler: Callable[..., Any] | None = field(default=None, repr=False)
    load_error: str | None = None

    @classmethod
    def from_config(cls, config: FunctionConfig, *, route_prefix: str) -> HttpFunction:
        """Read the httpTrigger binding like the host does.

        Raises:
            AppConfigError: Unknown `authLevel`, or a route template the host would reject.
        """
        trigger = config.trigger or {}
        try:
            route = compile_route(str(trigger.get("route") or config.name), prefix=route_prefix)
        except RouteTemplateError as exc:
            raise AppConfigError(f"{config.folder / 'function.json'}: {exc}") from exc
        auth_level = str(trigger.get("authLevel") or "function").lower()
        if auth_level not in AUTH_LEVELS:
            raise AppConfigError(
                f"{config.folder / 'function.json'}: authLevel {auth_level!r} is not one of "
                f"{', '.join(AUTH_LEVELS)}"
            )
        methods = trigger.get("methods")
        outs = [
            str(b.get("name"))
            for b in config.bindings
            if str(b.get("type", "")).lower() == "http" and b.get("direction") == "out"
        ]
        return cls(
            name=config.name,
            route=route,
            methods=frozenset(str(m).upper() for m in methods) if methods else None,
            auth_level=auth_level,
            binding_name=str(trigger.get("name") or "req"),
            out_binding=outs[0] if outs else None,
            module_name=config.module_name,
            entry_point=config.entry_point,
        )

    def allows(self, method: str) -> bool:
        """Whether `methods` lets this HTTP method in."""
        return self.methods is None or method.upper() in self.methods

    def load(self) -> None:
        """Import the module and check `main`'s parameters against the bindings.

        A failure is kept in `load_error` (and logged with its traceback), not raised: the
        function then answers 500 and the other functions keep working, as in the host.
        """
        try:
            module = importlib.import_module(self.module_name)
            handler = getattr(module, self.entry_point)
            self._check_signature(handler)
        except (Exception, SystemExit) as exc:
            self.handler, self.load_error = None, f"{type(exc).__name__}: {exc}"
            log.error(
                "function %s failed to load; it will answer 500: %s",
                self.name,
                self.load_error,
                exc_info=True,
            )
            return
        self.handler, self.load_error = handler, None

    def _check_signature(self, handler: Callable[..., Any]) -> None:
        params = inspect.signature(handler).parameters
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return
        given = {self.binding_name}
        if self.out_binding not in (None, "$return"):
            given.add(str(self.out_binding))
        if missing := given - set(params):
            raise TypeError(
                f"{self.entry_point}() has no parameter(s) {sorted(missing)} named by function.json"
            )
        required = {
            n
            for n, p in params.items()
            if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }
        if unbound := required - given:
            raise TypeError(
                f"{self.entry_point}() needs {sorted(unbound)}; the local host binds only the "
                "HTTP trigger and an http output"
            )


class HttpHost:
    """The HTTP half of a local Functions host, in-process: `start()`, `stop()`, or `with`.

    Args:
        app_root: The folder holding host.json and one folder per function.
        keys: Host keys accepted for `authLevel: function` (none: only the master key works).
        master_key: The key for `authLevel: admin` (also accepted for `function`).
        port: TCP port on 127.0.0.1; 0 picks a free one (read `port` or `url` after start).
        max_request_body_bytes: Larger bodies are answered 413.

    Raises:
        AppConfigError: Unreadable host.json or function.json, a bad route or authLevel.
        ValueError: An empty key (it would match an empty `code=`).
    """

    def __init__(
        self,
        app_root: Path | str,
        *,
        keys: Iterable[str] = (),
        master_key: str | None = None,
        port: int = 7071,
        max_request_body_bytes: int = DEFAULT_MAX_REQUEST_BODY_BYTES,
    ) -> None:
        self.app_root = Path(app_root).resolve()
        keys = list(keys)
        if any(not k for k in keys) or master_key == "":
            raise ValueError("function keys must be non-empty strings")
        if max_request_body_bytes < 0:
            raise ValueError("max_request_body_bytes must be >= 0")
        self._host_keys = [k.encode() for k in keys]
        self._master_keys = [master_key.encode()] if master_key else []
        self._port = port
        self.max_request_body_bytes = max_request_body_bytes
        self.route_prefix = load_host_config(self.app_root).route_prefix
        self.skipped: dict[str, str] = {}
        found = []
        for config in discover_functions(self.app_root):
            if config.trigger_type != "httpTrigger":
                self.skipped[config.name] = config.trigger_type or "no trigger binding"
            elif is_disabled(config.name):
                self.skipped[config.name] = f"disabled by AzureWebJobs.{config.name}.Disabled"
            else:
                found.append(HttpFunction.from_config(config, route_prefix=self.route_prefix))
        self.http_functions: list[HttpFunction] = sort_routes(found, lambda f: f.route)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._added_to_path = False
        self._loaded = False

    @property
    def functions(self) -> dict[str, str]:
        """Served function names -> route template (with the prefix), e.g. `api/readings`."""
        return {f.name: f.route.template for f in sorted(self.http_functions, key=lambda f: f.name)}

    @property
    def port(self) -> int:
        """The bound port once started; the requested one before."""
        return self._server.server_address[1] if self._server else self._port

    @property
    def url(self) -> str:
        """`http://127.0.0.1:<port>`, the base every route hangs from."""
        return f"http://{BIND_ADDRESS}:{self.port}"

    @property
    def has_master_key(self) -> bool:
        """Whether `authLevel: admin` functions can be reached at all."""
        return bool(self._master_keys)

    @property
    def running(self) -> bool:
        """Whether the server is accepting connections."""
        return self._server is not None

    def start(self) -> HttpHost:
        """Import every function module (once), bind 127.0.0.1 and serve on a daemon thread.

        Raises:
            RuntimeError: Already started.
            OSError: The port cannot be bound.
        """
        if self._server is not None:
            raise RuntimeError("the HTTP host is already running")
        if str(self.app_root) not in sys.path:
            sys.path.insert(0, str(self.app_root))
            self._added_to_path = True
        if not self._loaded:
            importlib.invalidate_caches()
            for function in self.http_functions:
                function.load()
            self._loaded = True
        try:
            self._server = _Server((BIND_ADDRESS, self._port), self)
        except OSError:
            self._forget_path()
            raise
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"local-http-host:{self.port}",
            daemon=True,
        )
        self._thread.start()
        log.info("local HTTP host listening on %s (%d functions)", self.url, len(self.functions))
        return self

    def stop(self, *, timeout: float = 5.0) -> None:
        """Stop accepting, close open connections and join every thread this host started."""
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        if thread is not None:
            thread.join(timeout)
        server.server_close()
        server.close_connections(timeout)
        self._server = self._thread = None
        self._forget_path()
        log.info("local HTTP host stopped")

    def __enter__(self) -> HttpHost:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _forget_path(self) -> None:
        if self._added_to_path:
            with contextlib.suppress(ValueError):
                sys.path.remove(str(self.app_root))
            self._added_to_path = False

    # --- the request pipeline (called from handler threads; reads only immutable state) ----

    def find(self, method: str, path: str) -> tuple[HttpFunction, dict[str, str]] | None:
        """The function the host would run for this method and path, with its route values."""
        for function in self.http_functions:
            if not function.allows(method):
                continue
            values = function.route.match(path)
            if values is not None:
                return function, values
        return None

    def openapi(self, method: str, path: str) -> Reply | None:
        """The app's `openapi.json` for `GET <prefix>/openapi.json`, or None (then route as usual).

        Read per request, so an edited document is served without a restart.
        """
        wanted = "/" + "/".join(p for p in (self.route_prefix, OPENAPI_FILE) if p)
        document = self.app_root / OPENAPI_FILE
        if method not in ("GET", "HEAD") or path.rstrip("/").lower() != wanted.lower():
            return None
        if not document.is_file():
            return None
        return 200, [("Content-Type", "application/json")], document.read_bytes()

    def authorized(
        self, function: HttpFunction, headers: Mapping[str, str], query: Sequence[tuple[str, str]]
    ) -> bool:
        """Whether the request carries a key good enough for the function's `authLevel`."""
        if function.auth_level == "anonymous":
            return True
        allowed = self._master_keys
        if function.auth_level == "function":
            allowed = [*self._host_keys, *self._master_keys]
        presented = headers.get(FUNCTION_KEY_HEADER) or next(
            (v for k, v in query if k.lower() == FUNCTION_KEY_QUERY), ""
        )
        if not presented:
            return False
        given = presented.encode("utf-8", "surrogateescape")
        # Compare with every key, so the time taken does not tell which key came close.
        return any([hmac.compare_digest(given, key) for key in allowed])

    def invoke(self, function: HttpFunction, request: func.HttpRequest) -> Reply:
        """Run the function and encode its answer; failures become a logged 500."""
        invocation = uuid.uuid4()
        started = time.perf_counter()
        log.info("Executing 'Functions.%s' (Id=%s)", function.name, invocation)
        if function.handler is None:
            log.error(
                "Executed 'Functions.%s' (Failed, Id=%s): the function did not load: %s",
                function.name,
                invocation,
                function.load_error,
            )
            return 500, [], b""
        out: _Out[Any] | None = None
        kwargs: dict[str, Any] = {function.binding_name: request}
        if function.out_binding not in (None, "$return"):
            out = _Out()
            kwargs[str(function.out_binding)] = out
        try:
            result = function.handler(**kwargs)
            if inspect.isawaitable(result):
                result = asyncio.run(_await(result))
            if function.out_binding is None:
                reply: Reply = (204, [], b"")
            else:
                reply = _encode(result if out is None else out.get())
        except Exception:
            log.exception(
                "Executed 'Functions.%s' (Failed, Id=%s, Duration=%dms)",
                function.name,
                invocation,
                (time.perf_counter() - started) * 1000,
            )
            return 500, [], b""
        log.info(
            "Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%dms)",
            function.name,
            invocation,
            (time.perf_counter() - started) * 1000,
        )
        return reply


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _encode(value: Any) -> Reply:
    """What the Python worker sends back for a returned value, as status, headers and body."""
    if isinstance(value, func.HttpResponse):
        headers = [(str(k), str(v)) for k, v in value.headers.items()]
        if not any(k.lower() == "content-type" for k, _ in headers):
            mimetype = value.mimetype
            if mimetype.startswith("text/"):
                mimetype = f"{mimetype}; charset={value.charset}"
            headers.append(("Content-Type", mimetype))
        return int(value.status_code), headers, value.get_body()
    if isinstance(value, str):
        return 200, [("Content-Type", "text/plain; charset=utf-8")], value.encode()
    raise TypeError(f"expected an azure.functions.HttpResponse or str, got {type(value).__name__}")


class _BadRequest(Exception):
    pass


class _TooLarge(Exception):
    pass


class _Server(ThreadingHTTPServer):
    """A threading server that knows its live connections, so `stop()` can end and join them."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], host: HttpHost) -> None:
        self.host = host
        self._live: dict[threading.Thread, socket.socket] = {}
        self._lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve each connection on its own daemon thread, remembered until it ends."""
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"local-http-conn:{client_address[1]}",
            daemon=True,
        )
        with self._lock:
            self._live[thread] = request
        thread.start()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve, then forget the connection."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._live.pop(threading.current_thread(), None)

    def close_connections(self, timeout: float) -> None:
        """Shut every open connection (idle keep-alives included) and join its thread."""
        with self._lock:
            live = dict(self._live)
        for sock in live.values():
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        for thread in live:
            thread.join(max(0.0, deadline - time.monotonic()))

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away is not news; anything else is logged, not printed."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            log.debug("connection from %s ended: %r", client_address, exc)
        else:
            log.warning("error serving %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    """One connection: parse, route, check the key, read the body, call, answer."""

    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "fleetscore-local-functions-host"
    sys_version = ""
    timeout = _IDLE_TIMEOUT_SECONDS

    def setup(self) -> None:
        """Headers and body leave in two writes; without TCP_NODELAY the second waits ~40 ms."""
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def parse_request(self) -> bool:
        """Reset per-request state, then parse as usual."""
        self._expect_continue = False
        self._body_consumed = False
        return super().parse_request()

    def handle_expect_100(self) -> bool:
        """Defer `100 Continue` until the body will actually be read (never for a 401/413)."""
        self._expect_continue = True
        return True

    def __getattr__(self, name: str) -> Any:
        # Every method reaches the router, as in the host: unknown ones simply match no route.
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Silenced: `_handle` logs one line per request, with the key redacted."""

    def log_message(self, format: str, *args: Any) -> None:
        """Parser errors and the like, redacted: a request line may carry `code=`."""
        log.debug("%s %s", self.address_string(), redact(format % args))

    def _handle(self) -> None:
        started = time.perf_counter()
        host = self.server.host
        target = urlsplit(self.path)
        query = parse_qsl(target.query, keep_blank_values=True)
        name = "-"
        found = host.find(self.command, target.path or "/")
        document = host.openapi(self.command, target.path or "/")
        try:
            if document is not None:
                status, headers, body = document
                name = OPENAPI_FILE
            elif found is None:
                status, headers, body = 404, [], b""
            else:
                function, route_values = found
                name = function.name
                if not host.authorized(function, self.headers, query):
                    status, headers, body = 401, [], b""
                else:
                    request = func.HttpRequest(
                        method=self.command,
                        url=self._url(),
                        headers=self._request_headers(),
                        params={k: v for k, v in reversed(query)},
                        route_params=route_values,
                        body=self._read_body(host.max_request_body_bytes),
                    )
                    status, headers, body = host.invoke(function, request)
        except _TooLarge:
            status, headers, body = 413, [], b""
        except _BadRequest:
            status, headers, body = 400, [], b""
        must_close = not self._body_consumed and self._has_body()
        # Logged before answering, so a client that has its answer can also read the log.
        log.info(
            '%s "%s %s" %d %s %.1fms',
            self.client_address[0],
            self.command,
            redact(self.path),
            status,
            name,
            (time.perf_counter() - started) * 1000,
        )
        self._send(status, headers, body, close=must_close)
        if must_close:
            self._linger()

    def _url(self) -> str:
        if self.path.startswith(("http://", "https://")):
            return self.path
        authority = self.headers.get("Host") or f"{BIND_ADDRESS}:{self.server.host.port}"
        return f"http://{authority}{self.path}"

    def _request_headers(self) -> dict[str, str]:
        merged: dict[str, str] = {}
        for key, value in self.headers.items():
            k = key.lower()
            merged[k] = f"{merged[k]}, {value}" if k in merged else value
        return merged

    def _has_body(self) -> bool:
        length = (self.headers.get("Content-Length") or "0").strip()
        return bool(self.headers.get("Transfer-Encoding")) or length not in ("", "0")

    def _continue(self) -> None:
        if self._expect_continue:
            self.send_response_only(HTTPStatus.CONTINUE)
            self.end_headers()
            self._expect_continue = False

    def _read_body(self, limit: int) -> bytes:
        """The whole body, refusing anything over `limit` bytes before reading past it."""
        coding = self.headers.get("Transfer-Encoding")
        if coding is not None:
            if coding.strip().lower() != "chunked":
                raise _BadRequest
            return self._read_chunked(limit)
        lengths = {v.strip() for v in self.headers.get_all("Content-Length") or []}
        if not lengths:
            self._body_consumed = True
            return b""
        if len(lengths) > 1 or not next(iter(lengths)).isdigit():
            raise _BadRequest
        length = int(next(iter(lengths)))
        if length > limit:
            raise _TooLarge
        self._continue()
        body = self.rfile.read(length)
        if len(body) != length:
            raise _BadRequest
        self._body_consumed = True
        return body

    def _read_chunked(self, limit: int) -> bytes:
        self._continue()
        parts, total = [], 0
        while True:
            line = self.rfile.readline(_MAX_CHUNK_LINE)
            size_text = line.split(b";", 1)[0].strip()
            if not line.endswith(b"\n") or not re.fullmatch(rb"[0-9A-Fa-f]{1,16}", size_text):
                raise _BadRequest
            size = int(size_text, 16)
            if size == 0:
                break
            total += size
            if total > limit:
                raise _TooLarge
            chunk = self.rfile.read(size)
            if len(chunk) != size or self.rfile.readline(_MAX_CHUNK_LINE) not in (b"\r\n", b"\n"):
                raise _BadRequest
            parts.append(chunk)
        while self.rfile.readline(_MAX_CHUNK_LINE) not in (b"\r\n", b"\n", b""):
            pass  # trailers: read and ignored
        self._body_consumed = True
        return b"".join(parts)

    def _send(
        self, status: int, headers: list[tuple[str, str]], body: bytes, *, close: bool
    ) -> None:
        self.send_response(status)
        for key, value in headers:
            if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(key, value)
        if status >= 200 and status != 204:
            self.send_header("Content-Length", str(len(body)))
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        if body and self.command != "HEAD" and status not in (204, 304):
            self.wfile.write(body)

    def _linger(self) -> None:
        """Answer first, then read and drop what the client still sends, then close.

        Closing a socket with unread input makes the kernel reset the connection, and a client
        still sending its body may then lose the answer; a short, bounded drain avoids that.
        """
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(_DRAIN_SECONDS)
            drained = 0
            while drained < _DRAIN_MAX_BYTES:
                chunk = self.rfile.read1(65536)
                if not chunk:
                    break
                drained += len(chunk)
        except OSError:
            pass
        self.close_connection = True
