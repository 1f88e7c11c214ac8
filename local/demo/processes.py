"""Child processes of the demo: started in their own process groups, logged, health-checked.

Each service writes to `<logs>/<name>.log`. A service is healthy when its `ready` probe says so;
the wait has a deadline, and a failure names the service and shows the tail of its log, since
that is where the reason is. `stop_all` stops the newest first (hosts before the emulators they
talk to), each group with SIGTERM and, if it lingers, SIGKILL.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "PortTakenError",
    "ProcessGroup",
    "Service",
    "ServiceError",
    "check_ports_free",
    "free_port",
    "free_ports",
    "http_answers",
    "tcp_answers",
]

log = logging.getLogger(__name__)

_TAIL_LINES = 30


class ServiceError(RuntimeError):
    """A service exited or was not healthy in time; the message carries its log's tail."""


class PortTakenError(ServiceError):
    """A port the demo wants is already in use."""


@dataclass
class Service:
    """A command to run and how to tell that it is up."""

    name: str
    argv: Sequence[str]
    ready: Callable[[], bool]
    env: Mapping[str, str] = field(default_factory=dict)
    unset: frozenset[str] = frozenset()  # inherited variables to drop (they would win)
    cwd: Path | None = None
    timeout: float = 60.0


@dataclass
class _Running:
    service: Service
    proc: subprocess.Popen[bytes]
    log_path: Path
    log_offset: int = 0  # where this run's output starts in the log (a restart appends)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now, chosen by the OS."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 right now.

    All sockets stay bound until every port is picked: asked one at a time, the OS may hand
    out the same port twice, and a stack of seven servers would then collide with itself.
    """
    with contextlib.ExitStack() as stack:
        socks = [
            stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(n)
        ]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def check_ports_free(ports: Mapping[str, int]) -> None:
    """Bind each port once on 127.0.0.1, so a taken one is reported before anything starts.

    Raises:
        PortTakenError: naming every taken port and what it was meant for.
    """
    taken = []
    for what, port in ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                taken.append(f"port {port} ({what})")
    if taken:
        raise PortTakenError(
            f"already in use on 127.0.0.1: {', '.join(taken)}; stop what holds it or choose "
            "another port (python -m local.demo --help lists the port options)"
        )


def tcp_answers(port: int) -> Callable[[], bool]:
    """A probe: True once something accepts connections on 127.0.0.1:`port`."""

    def probe() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    return probe


def http_answers(
    port: int, path: str = "/", *, ok: Callable[[int], bool] | None = None
) -> Callable[[], bool]:
    """A probe: True once GET `path` answers with a status `ok` accepts (any status if None)."""

    def probe() -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)
        try:
            conn.request("GET", path)
            status = conn.getresponse().status
        except OSError:
            return False
        finally:
            conn.close()
        return ok is None or ok(status)

    return probe


def tail(path: Path, lines: int = _TAIL_LINES) -> str:
    """The last `lines` lines of a log file ('' if it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


class ProcessGroup:
    """The processes the demo started, and only those; stopped together."""

    def __init__(self, logs: Path) -> None:
        """Logs go to `logs/<name>.log` (the folder is created)."""
        self.logs = logs
        self.logs.mkdir(parents=True, exist_ok=True)
        self._running: list[_Running] = []
        self._known: dict[str, Service] = {}  # every service started, for `start_again`

    @property
    def names(self) -> list[str]:
        """Names of the services started so far, in order."""
        return [r.service.name for r in self._running]

    def log_path(self, name: str) -> Path:
        """Where service `name` logs."""
        return self.logs / f"{name}.log"

    def start(self, services: Sequence[Service], *, append: bool = False) -> None:
        """Start `services` at once, then wait until each is healthy.

        `append` keeps what the log holds (a restarted service's earlier life stays readable).

        Raises:
            ServiceError: naming the first one that exited or missed its deadline.
        """
        started = []
        for service in services:
            path = self.log_path(service.name)
            offset = path.stat().st_size if append and path.exists() else 0
            self._known[service.name] = service
            with path.open("ab" if append else "wb") as out:
                proc = subprocess.Popen(
                    list(service.argv),
                    cwd=service.cwd,
                    env={
                        **{k: v for k, v in os.environ.items() if k not in service.unset},
                        "PYTHONUNBUFFERED": "1",
                        **service.env,
                    },
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: stopped as one
                )
            running = _Running(service, proc, path, offset)
            self._running.append(running)
            started.append(running)
            log.info("started %s (pid %d), log %s", service.name, proc.pid, path)
        for running in started:
            self._wait_healthy(running)

    def start_again(self, name: str) -> None:
        """Start a service that was stopped, killed or has exited, with its first settings.

        Its log is appended to. One that exited on its own is still listed; it is dropped from
        the list first, so it is not stopped (or counted) twice.

        Raises:
            ServiceError: `name` was never started, or is still running.
        """
        if name not in self._known:
            raise ServiceError(f"{name} was never started")
        if self.is_running(name):
            raise ServiceError(f"{name} is still running")
        self._running = [r for r in self._running if r.service.name != name]
        self.start([self._known[name]], append=True)

    def kill(self, name: str) -> bool:
        """SIGKILL service `name`'s process group at once (no chance to flush or checkpoint).

        Returns:
            Whether it was still running.
        """
        chosen = [r for r in self._running if r.service.name == name]
        alive = any(r.proc.poll() is None for r in chosen)
        try:
            for running in chosen:
                _signal(running.proc, signal.SIGKILL)
                running.proc.wait(timeout=10)
                log.info("killed %s (pid %d)", name, running.proc.pid)
        finally:
            # Even if a wait times out, the entry goes: a later start_again must not refuse.
            self._running = [r for r in self._running if r not in chosen]
        return alive

    def is_running(self, name: str) -> bool:
        """Whether service `name` was started and has not exited."""
        return any(r.service.name == name and r.proc.poll() is None for r in self._running)

    def current_log(self, name: str) -> str:
        """What service `name` has logged since it was last started ('' if never)."""
        offset = next((r.log_offset for r in self._running if r.service.name == name), None)
        if offset is None:
            return ""
        try:
            with self.log_path(name).open("rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def _wait_healthy(self, running: _Running) -> None:
        service, proc = running.service, running.proc
        deadline = time.monotonic() + service.timeout
        while True:
            if proc.poll() is not None:
                raise ServiceError(
                    f"{service.name} exited with code {proc.returncode} while starting; "
                    f"last lines of {running.log_path}:\n{tail(running.log_path)}"
                )
            if service.ready():
                log.info("%s is up", service.name)
                return
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"{service.name} was not healthy within {service.timeout:g}s; "
                    f"last lines of {running.log_path}:\n{tail(running.log_path)}"
                )
            time.sleep(0.1)

    def check_alive(self) -> None:
        """Raise ServiceError naming a service that has exited since it started."""
        for running in self._running:
            if running.proc.poll() is not None:
                raise ServiceError(
                    f"{running.service.name} exited with code {running.proc.returncode}; "
                    f"last lines of {running.log_path}:\n{tail(running.log_path)}"
                )

    def stop(self, names: Sequence[str], *, grace: float = 20.0) -> list[str]:
        """SIGTERM the named services together, wait up to `grace` s, SIGKILL what is left.

        Returns:
            The names of those that were still running (in start order).
        """
        chosen = [r for r in self._running if r.service.name in names]
        alive = [r.service.name for r in chosen if r.proc.poll() is None]
        for running in chosen:
            _signal(running.proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for running in chosen:
            try:
                running.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0fs; killing it", running.service.name, grace)
                _signal(running.proc, signal.SIGKILL)
                running.proc.wait(timeout=10)
        self._running = [r for r in self._running if r not in chosen]
        return alive

    def stop_all(self, *, grace: float = 20.0) -> list[str]:
        """Stop every service, newest first; return their names."""
        stopped: list[str] = []
        for running in reversed(list(self._running)):
            stopped += self.stop([running.service.name], grace=grace)
        return stopped


def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Signal `proc`'s whole process group, even if the leader has exited.

    Children of an exited leader may still run in the group, so the leader's exit is no reason
    to skip it. A group that is gone (ProcessLookupError) or whose pgid now belongs to another
    user's processes (PermissionError, after reuse) is left alone.
    """
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
