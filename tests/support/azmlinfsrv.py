"""Run Microsoft's AML inference server (``azmlinfsrv``) on the model's entry script.

The contract tests and the bench talk to the same server AML runs in production, so what they
measure includes its Flask/gunicorn request handling, not just our numpy core.

``azmlinfsrv`` 1.5.1 has no ``--host`` option: it always binds gunicorn to ``0.0.0.0``
(``amlserver.DEFAULT_HOST``). To keep test servers on loopback we start it through a one-line
launcher that sets that constant to ``127.0.0.1`` and then calls the CLI's own ``run()`` with
the same arguments, so everything else is the CLI's behaviour. The launcher is pinned to the
version in ``requirements-dev.txt``; ``serve`` checks the server's log for the loopback bind.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import requests

from tests.support.waiting import wait_until

__all__ = ["LAUNCHER", "REPO", "free_port", "serve"]

REPO = Path(__file__).resolve().parents[2]

LAUNCHER = (
    "import azureml_inference_server_http.amlserver as s; s.DEFAULT_HOST = '127.0.0.1'; s.run()"
)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it, so parallel runs don't clash)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ready(url: str, proc: subprocess.Popen[bytes]) -> bool:
    """True once the liveness route answers 200; also True if the process died (checked later)."""
    if proc.poll() is not None:
        return True
    try:
        with requests.get(url, timeout=1.0) as resp:
            return resp.status_code == 200
    except requests.RequestException:
        return False


def _stop(proc: subprocess.Popen[bytes], *, grace: float = 5.0) -> None:
    """SIGTERM the whole process group (gunicorn master and workers), SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=grace)


@contextmanager
def serve(
    entry_script: Path | str = REPO / "model" / "score.py",
    *,
    model_dir: Path | str | None = None,
    port: int | None = None,
    workers: int = 1,
    timeout: float = 30.0,
) -> Iterator[str]:
    """Start ``azmlinfsrv`` on 127.0.0.1 and yield its base URL (``POST {url}/score``).

    The server runs in its own process group and is always stopped on exit. Its output goes to
    a temporary log file whose contents are put in the error if it does not come up in time.

    Args:
        entry_script: the scoring script with ``init()`` / ``run(raw_data)``.
        model_dir: what ``AZUREML_MODEL_DIR`` points at; a fresh empty directory if ``None``.
        port: the serving port; a free one if ``None``.
        workers: gunicorn workers (the server's ``--worker_count``).
        timeout: seconds to wait for the liveness route to answer 200.

    Raises:
        RuntimeError: the server exited or did not answer within ``timeout``; carries its log.
    """
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="azmlinfsrv-") as tmp:
        log_path = Path(tmp) / "server.log"
        model_path = Path(model_dir) if model_dir is not None else Path(tmp) / "model"
        model_path.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "AZUREML_MODEL_DIR": str(model_path),
            "AML_APP_ROOT": str(REPO),  # so the entry script's `import model.…` resolves
            "PYTHONUNBUFFERED": "1",
        }
        cmd = [
            sys.executable,
            "-c",
            LAUNCHER,
            "--entry_script",
            str(entry_script),
            "--port",
            str(port),
            "--worker_count",
            str(workers),
        ]
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                cmd,
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            up = wait_until(lambda: _ready(url, proc), timeout=timeout, interval=0.1)
            if not up or proc.poll() is not None:
                raise RuntimeError(
                    f"azmlinfsrv did not come up on {url} "
                    f"(exit code {proc.poll()}); log:\n{log_path.read_text(errors='replace')}"
                )
            if f"Listening at: {url}" not in log_path.read_text(errors="replace"):
                raise RuntimeError(
                    f"azmlinfsrv is not bound to 127.0.0.1 only; log:\n{log_path.read_text()}"
                )
            yield url
        finally:
            _stop(proc)
