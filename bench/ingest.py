"""The ingest hop: devices' POSTs through the real ingest function into the Event Hubs emulator.

    .venv/bin/python bench/ingest.py [--quick] [--json FILE]

What runs, all on 127.0.0.1 free ports, started and stopped here:

* the Event Hubs emulator (``local.eventhubs``) in a thread of this process, fsync as default;
* the local Functions host (``local.host.http.HttpHost``) serving the repo's ``ingest_function``
  with a function key, its app built by ``shared.wiring`` from app settings that point at the
  emulator, so each 202 means the events were acknowledged by the hub through the SDK;
* the devices: a separate Python process of ``--clients`` threads, each with its own
  keep-alive ``requests`` session, posting for a fixed time per batch size.

Requests carry 1, 10, 100 or 1,000 readings of a pump's six metrics; a device contributes ten
readings to a request (one device for 1 and 10, ten devices for 100, a hundred for 1,000), so
the ingest publishes one event per device per request, as in the running fleet.

CPU per reading is split: ``client`` is the devices' process, ``server`` is this process (the
host, the function, the SDK producer and the emulator together; on Azure the emulator's share
is the service's). ``measure()`` returns the figures (see ``FIGURES``); ``main()`` prints one
per line with its unit and meaning, then one JSON line. Nothing is asserted.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))  # for _common

from _common import standard_main

from local.eventhubs.runner import EmulatorThread
from local.host.http import HttpHost
from shared import wiring
from simulator.fleet import kind_metrics

REPO = Path(__file__).resolve().parents[1]
BATCHES = (1, 10, 100, 1000)
PER_DEVICE = 10
CLIENTS = 4
KEY = "bench-ingest-key-0123456789"
BODY_LIMIT = 1_048_576  # FUNCTIONS_REQUEST_BODY_SIZE_LIMIT of the local stack
METRICS = kind_metrics("pump")


def _figures() -> dict[str, tuple[str, str]]:
    figures: dict[str, tuple[str, str]] = {}
    for b in BATCHES:
        what = f"{b} reading{'s' if b > 1 else ''} per POST, {CLIENTS} keep-alive clients"
        figures[f"ingest_requests_per_s_b{b}"] = ("requests/s", f"202s, {what}")
        figures[f"ingest_readings_per_s_b{b}"] = ("readings/s", f"readings accepted, {what}")
        figures[f"ingest_client_cpu_us_per_reading_b{b}"] = (
            "µs CPU/reading",
            "the devices' process (build, send, read the answer)",
        )
        figures[f"ingest_server_cpu_us_per_reading_b{b}"] = (
            "µs CPU/reading",
            "host + ingest function + SDK producer + emulator (one process)",
        )
    figures["ingest_failed_requests"] = ("requests", "answers other than 202, all sizes")
    return figures


FIGURES = _figures()


# --- the devices (run in their own process: python bench/ingest.py --client ...) -----------


def request_body(batch: int, rng: random.Random, now: datetime, serial: int) -> bytes:
    """One POST body: ``batch`` readings, ``PER_DEVICE`` per device, timestamps of the last hour.

    ``serial`` makes each request's devices and timestamps its own, so nothing is a resend.
    """
    devices = max(1, batch // PER_DEVICE)
    per_device = batch // devices
    base = now - timedelta(minutes=30)
    readings = [
        {
            "device_id": f"pump-{(serial * devices + d) % 100_000:05d}",
            "timestamp": (base + timedelta(seconds=10 * i)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "metrics": {
                m: round(50.0 * (k + 1) + rng.gauss(0, 1), 3) for k, m in enumerate(METRICS)
            },
        }
        for d in range(devices)
        for i in range(per_device)
    ]
    return json.dumps({"readings": readings}, separators=(",", ":")).encode()


def run_clients(url: str, batch: int, clients: int, seconds: float) -> dict[str, Any]:
    """Post for ``seconds`` from ``clients`` threads; counts, wall and this process's CPU.

    Bodies are built before the clock starts (a device has its readings ready); each thread
    cycles through its own 20 bodies.
    """
    import requests

    now = datetime.now(UTC)
    rng = random.Random(batch)
    bodies = [
        [request_body(batch, rng, now, c * 20 + i) for i in range(20)] for c in range(clients)
    ]
    headers = {"Content-Type": "application/json", "x-functions-key": KEY}
    counts = [[0, 0, 0] for _ in range(clients)]  # warm-up, timed 202s, failures
    start = threading.Barrier(clients + 1)
    stop = threading.Event()

    def client(c: int) -> None:
        with requests.Session() as session:

            def post(i: int) -> bool:
                body = bodies[c][i % len(bodies[c])]
                with session.post(url, data=body, headers=headers, timeout=60) as resp:
                    return resp.status_code == 202

            for i in range(2):  # connect and warm up before the clock starts
                post(i)
                counts[c][0] += 1
            start.wait()
            i = 2
            while not stop.is_set():
                if post(i):
                    counts[c][1] += 1
                else:
                    counts[c][2] += 1
                i += 1

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0, cpu0 = time.perf_counter(), time.process_time()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {
        "warmup": sum(c[0] for c in counts),
        "accepted": sum(c[1] for c in counts),
        "failed": sum(c[2] for c in counts),
        "seconds": wall,
        "cpu_s": cpu,
    }


# --- the server side ---------------------------------------------------------------------


@contextmanager
def app_settings(values: dict[str, str]) -> Iterator[None]:
    """Set app settings as the host would and forget wiring's cached settings and clients."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    wiring.get_settings.cache_clear()
    wiring.ingest_app.cache_clear()
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        wiring.get_settings.cache_clear()
        wiring.ingest_app.cache_clear()


@contextmanager
def ingest_stack() -> Iterator[str]:
    """Emulator + host serving ingest_function built from settings; yield the ingest URL."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp,
        EmulatorThread(Path(tmp)) as hubs,
        app_settings(
            {
                "EVENTHUB_CONNECTION": hubs.connection_string(),
                "EVENTHUB_NAME": "readings",
                # Required by the settings, unused by ingest: nothing is contacted there.
                "TABLES_CONNECTION": (
                    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
                    "AccountKey=dGVzdA==;TableEndpoint=http://127.0.0.1:9/devstoreaccount1;"
                ),
                "AML_ENDPOINT_URL": "http://127.0.0.1:9/score",
                "AML_ENDPOINT_KEY": "bench",
            }
        ),
    ):
        app = wiring.ingest_app()
        host = HttpHost(REPO, keys=[KEY], port=0, max_request_body_bytes=BODY_LIMIT)
        try:
            with host:
                import ingest_function

                # The module may have been imported earlier in this process with other
                # settings; the app it serves here is the one wiring just built.
                ingest_function._app = app
                yield f"{host.url}/api/readings"
        finally:
            app.publisher.close()


def measure(quick: bool = False, *, seconds: float | None = None) -> dict[str, float | int]:
    """Start the stack, drive each batch size for a while, stop it; return the figures.

    Args:
        quick: 3 s per batch size instead of 12 s.
        seconds: override the time per batch size.
    """
    seconds = seconds or (3.0 if quick else 12.0)
    figures: dict[str, float | int] = {}
    failed = 0
    with ingest_stack() as url:
        for batch in BATCHES:
            cpu0 = time.process_time()
            done = subprocess.run(
                [sys.executable, __file__, "--client", url, str(batch), str(seconds)],
                check=True,
                capture_output=True,
                text=True,
                cwd=REPO,
            )
            server_cpu = time.process_time() - cpu0
            got = json.loads(done.stdout.strip().splitlines()[-1])
            served = got["warmup"] + got["accepted"] + got["failed"]
            failed += got["failed"]
            figures[f"ingest_requests_per_s_b{batch}"] = round(got["accepted"] / got["seconds"], 1)
            figures[f"ingest_readings_per_s_b{batch}"] = round(
                got["accepted"] * batch / got["seconds"]
            )
            figures[f"ingest_client_cpu_us_per_reading_b{batch}"] = round(
                got["cpu_s"] / max(got["accepted"] * batch, 1) * 1e6, 1
            )
            figures[f"ingest_server_cpu_us_per_reading_b{batch}"] = round(
                server_cpu / max(served * batch, 1) * 1e6, 1
            )
    figures["ingest_failed_requests"] = failed
    return figures


def main() -> None:
    """Measure and print (or, with --client, be the devices' process)."""
    if sys.argv[1:2] == ["--client"]:
        url, batch, seconds = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
        print(json.dumps(run_clients(url, batch, CLIENTS, seconds)))
        return
    standard_main(measure, FIGURES, __doc__, "3 s per batch size instead of 12 s")


if __name__ == "__main__":
    main()
