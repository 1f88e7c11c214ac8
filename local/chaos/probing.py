"""What a security probe sends and keeps: raw HTTP, the answers, and a verdict per probe.

Probes must send a request byte for byte as a hostile client would (no dot-segment removal, no
re-encoding, a Content-Length with no body), which `requests` does not allow, so they use
`http.client` directly. Every answer is kept, so that a later check can look for secrets in it.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["PROBE_DEVICE", "Answer", "Leak", "Probe", "Seen", "Tally", "send_raw"]

TIMEOUT = 10.0  # seconds for an ordinary request
PROBE_DEVICE = "chaos-probe-0001"  # a valid id no fleet uses: its rows would be ours

Seen = list[str]  # every answer received, as text, for the check that no answer holds a secret


@dataclass(frozen=True)
class Probe:
    """One probe's verdict: `detail` says what was sent and what came back, never a secret."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Leak:
    """A log line holding a secret: `what` names the secret (or the field), never its value."""

    path: Path
    line_number: int
    what: str


@dataclass(frozen=True)
class Answer:
    """One answer as received; status 0 means none came (`error` says why)."""

    status: int  # 0: no answer (see `error`)
    headers: list[tuple[str, str]]
    body: bytes
    seconds: float
    error: str = ""

    @property
    def shown(self) -> str:
        """The status for a probe's detail."""
        return str(self.status) if self.status else f"no answer ({self.error})"

    def text(self) -> str:
        """Status, headers and body as text, to search for secrets."""
        head = "\n".join(f"{k}: {v}" for k, v in self.headers)
        return f"{self.status}\n{head}\n\n{self.body.decode('utf-8', 'replace')}"


@dataclass
class Tally:
    """What a probe checked and what failed; becomes its `Probe`."""

    name: str
    checked: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def expect(self, said: str, answer: Answer, status: int) -> None:
        """Note `answer` to what `said` describes: a check, or a failure if not `status`."""
        said = f"{said} -> {answer.shown}"
        if answer.status == status:
            self.checked.append(said)
        else:
            self.failures.append(f"{said}, expected {status}")

    def probe(self) -> Probe:
        """The verdict: failures if any, else what was checked."""
        if self.failures:
            return Probe(self.name, False, "; ".join(self.failures))
        return Probe(self.name, True, "; ".join(self.checked))


# --- HTTP without a client that tidies the request up ---------------------------------------


def send_raw(
    url: str,
    method: str,
    target: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | Iterable[bytes] | None = None,
    chunked: bool = False,
    timeout: float = TIMEOUT,
) -> Answer:
    """Send `target` byte for byte (no dot-segment removal, no re-encoding) and read the answer."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    started = time.monotonic()
    try:
        return _exchange(conn, method, target, headers or {}, body, chunked=chunked)
    except (OSError, http.client.HTTPException) as exc:  # TimeoutError included
        return Answer(0, [], b"", time.monotonic() - started, type(exc).__name__)
    finally:
        conn.close()


def _exchange(
    conn: http.client.HTTPConnection,
    method: str,
    target: str,
    headers: Mapping[str, str],
    body: bytes | Iterable[bytes] | None,
    *,
    chunked: bool,
) -> Answer:
    started = time.monotonic()
    conn.putrequest(method, target, skip_accept_encoding=True)
    for key, value in headers.items():
        conn.putheader(key, value)
    if chunked:
        conn.putheader("Transfer-Encoding", "chunked")
    elif isinstance(body, bytes):
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders()
    try:
        if chunked and body is not None:
            for chunk in body:
                conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            conn.send(b"0\r\n\r\n")
        elif isinstance(body, bytes):
            conn.send(body)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered early and closed: its answer is still readable
    response = conn.getresponse()
    data = response.read()
    return Answer(response.status, response.getheaders(), data, time.monotonic() - started)
