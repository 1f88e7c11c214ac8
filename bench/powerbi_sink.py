"""The Power BI sink's overhead on a score host: CPU per prediction offered.

    .venv/bin/python bench/powerbi_sink.py [--quick] [--json FILE]

The sink (``shared.powerbi``) is built by ``sink_from_settings`` as the app builds it, pointed
at the local Power BI stand-in (``python -m dashboard``, started here in its own process on a
free 127.0.0.1 port, rows in memory, stopped at the end), with the app's default interval and
pacing. This process then offers a trigger batch's predictions (256 devices x 10, 1% of them
anomalies) every 0.1 s, as a busy score host would, and closes the sink, which flushes the open
window. Its CPU is this process's: ``offer()`` in the scoring thread plus the sink's posting
thread (building rows, JSON, HTTP); the stand-in's own CPU is not counted.

``measure()`` returns the figures (see ``FIGURES``); ``main()`` prints one per line with its
unit and meaning, then one JSON line. Nothing is asserted.
"""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))  # for _common

from _common import standard_main

from dashboard.store import dataset_id_for
from shared.powerbi import sink_from_settings
from shared.predictions import Prediction
from shared.settings import load_settings
from simulator.fleet import kind_metrics

REPO = Path(__file__).resolve().parents[1]
KEY = "bench-dashboard-key"
DEVICES, PER_DEVICE = 256, 10
EVERY_S = 0.1
METRICS = kind_metrics("pump")

FIGURES = {
    "powerbi_sink_cpu_us_per_prediction": (
        "µs CPU/prediction",
        "offer() plus the posting thread, close and flush included",
    ),
    "powerbi_sink_offer_cpu_us_per_prediction": (
        "µs CPU/prediction",
        "offer() alone, in the calling (scoring) thread",
    ),
    "powerbi_sink_predictions_offered": ("predictions", "offered in the timed run"),
    "powerbi_sink_rows_pushed": ("rows", "aggregate and anomaly rows the stand-in accepted"),
    "powerbi_sink_rows_dropped": ("rows", "rows the sink dropped (queue full, too old, refused)"),
}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def dashboard() -> Iterator[str]:
    """Run ``python -m dashboard`` on a free loopback port, rows in memory; yield its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dashboard", "--port", str(port), "--db", ":memory:", "--key", KEY],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the dashboard did not start (exit code {proc.poll()})")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def trigger_batch(round_: int, rng: random.Random, start: datetime) -> list[Prediction]:
    """One trigger batch's predictions: 256 devices x 10, about 1% anomalies."""
    t = start + timedelta(seconds=100 * round_)
    return [
        Prediction(
            device_id=f"pump-{d:04d}",
            timestamp=t + timedelta(seconds=10 * i),
            anomaly_score=(score := rng.random()),
            is_anomaly=score > 0.99,
            top_metric="vibration_mm_s",
            failure_probability=round(rng.random() * 0.3, 4),
            maintenance_due=False,
            model_version="fleetscore-anomaly-0.2.0",
            metrics={m: 100.0 * (k + 1) for k, m in enumerate(METRICS)},
        )
        for d in range(DEVICES)
        for i in range(PER_DEVICE)
    ]


def measure(quick: bool = False, *, seconds: float | None = None) -> dict[str, float | int]:
    """Offer predictions for a while against the stand-in; CPU per prediction.

    Args:
        quick: 5 s of offers instead of 30 s.
        seconds: override how long predictions are offered.
    """
    seconds = seconds or (5.0 if quick else 30.0)
    rng = random.Random(8)
    start = datetime.now(UTC) - timedelta(hours=1)
    rounds = max(1, round(seconds / EVERY_S))
    batches = [trigger_batch(r, rng, start) for r in range(min(rounds, 50))]  # reused in turn
    with dashboard() as url:
        settings = load_settings(
            {
                "EVENTHUB_CONNECTION": "Endpoint=sb://127.0.0.1:9;UseDevelopmentEmulator=true",
                "TABLES_CONNECTION": "UseDevelopmentStorage=true",
                "AML_ENDPOINT_URL": "http://127.0.0.1:9/score",
                "AML_ENDPOINT_KEY": "bench",
                "POWERBI_API_URL": url,
                "POWERBI_DATASET_ID": dataset_id_for("", "fleetscore"),
                "POWERBI_ACCESS_TOKEN": KEY,
            }
        )
        sink = sink_from_settings(settings, start=False)
        cpu = time.process_time()
        sink.start()
        offer_cpu = 0.0
        offered = 0
        next_at = time.perf_counter()
        for r in range(rounds):
            batch = batches[r % len(batches)]
            t = time.thread_time()
            sink.offer(batch)
            offer_cpu += time.thread_time() - t
            offered += len(batch)
            next_at += EVERY_S
            time.sleep(max(0.0, next_at - time.perf_counter()))
        sink.close(10.0)
        cpu = time.process_time() - cpu
        stats = sink.stats
    return {
        "powerbi_sink_cpu_us_per_prediction": round(cpu / offered * 1e6, 2),
        "powerbi_sink_offer_cpu_us_per_prediction": round(offer_cpu / offered * 1e6, 2),
        "powerbi_sink_predictions_offered": offered,
        "powerbi_sink_rows_pushed": stats.rows_pushed,
        "powerbi_sink_rows_dropped": stats.rows_dropped,
    }


def main() -> None:
    """Measure and print."""
    standard_main(measure, FIGURES, __doc__, "5 s of offers instead of 30 s")


if __name__ == "__main__":
    main()
