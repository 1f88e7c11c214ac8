"""Run Microsoft's Azurite table service from node_modules for tests, on a free loopback port.

`run_azurite()` starts it in memory, waits until its HTTP port answers (polling with a deadline,
never a fixed sleep), yields a connection string and always stops the whole process group.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

__all__ = ["ACCOUNT_KEY", "ACCOUNT_NAME", "AzuriteError", "connection_string", "run_azurite"]

ROOT = Path(__file__).resolve().parents[2]
AZURITE_BIN = ROOT / "node_modules" / ".bin"
# Azurite's well-known development account; public by design, not a secret.
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


class AzuriteError(RuntimeError):
    """Azurite is not installed, did not start, or did not answer in time."""


def connection_string(port: int, service: str = "table") -> str:
    """The connection string of the Azurite `service` ("table" or "blob") endpoint on `port`."""
    endpoint = "TableEndpoint" if service == "table" else "BlobEndpoint"
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={ACCOUNT_KEY};"
        f"{endpoint}=http://127.0.0.1:{port}/{ACCOUNT_NAME};"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(port: int) -> bool:
    """True once the service answers HTTP at all (any status: 403 without a signature is fine)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=0.5)
    try:
        conn.request("GET", f"/{ACCOUNT_NAME}/Tables")
        conn.getresponse().read()
        return True
    except OSError:
        return False
    finally:
        conn.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, SIGKILL it if it lingers, and reap the process."""
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with suppress(ProcessLookupError):  # already gone
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def run_azurite(
    *, service: str = "table", timeout: float = 30.0, attempts: int = 3
) -> Iterator[str]:
    """Start Azurite's `service` ("table" or "blob") in memory and yield its connection string.

    A port taken between choosing it and Azurite binding it makes Azurite exit; that is retried
    on another port, up to `attempts` times.

    Raises:
        AzuriteError: when node_modules is missing, or Azurite exits or stays silent.
    """
    binary = AZURITE_BIN / f"azurite-{service}"
    if not binary.exists():
        raise AzuriteError(
            f"Azurite is not installed ({binary} is missing): run `npm install` in {ROOT}"
        )
    with tempfile.TemporaryDirectory(prefix="azurite-") as workdir:
        log_path = Path(workdir) / "azurite.log"
        for attempt in range(1, attempts + 1):
            port = _free_port()
            with log_path.open("wb") as log:
                proc = subprocess.Popen(
                    [
                        str(binary),
                        "--inMemoryPersistence",
                        "--disableTelemetry",
                        "--skipApiVersionCheck",
                        "--silent",
                        f"--{service}Host",
                        "127.0.0.1",
                        f"--{service}Port",
                        str(port),
                    ],
                    cwd=workdir,  # whatever Azurite writes lands in the temporary directory
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group, stopped as one
                )
            try:
                deadline = time.monotonic() + timeout
                while not _answers(port):
                    if time.monotonic() > deadline:
                        raise AzuriteError(f"Azurite did not answer on port {port} in {timeout}s")
                    try:
                        proc.wait(timeout=0.05)  # returns at once if Azurite died
                    except subprocess.TimeoutExpired:
                        continue
                    output = log_path.read_text(errors="replace")
                    if "EADDRINUSE" in output and attempt < attempts:
                        break
                    raise AzuriteError(f"Azurite exited with {proc.returncode}:\n{output}")
                else:
                    yield connection_string(port, service)
                    return
            finally:
                _stop(proc)
        raise AzuriteError(f"Azurite found no free port in {attempts} attempts")
