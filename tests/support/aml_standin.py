"""An AML online endpoint stand-in at the HTTP level, for scoring-client tests.

It speaks the scoring contract (1 or 2, answering in the request's) with a trivial model (anomaly when any metric exceeds 100,
state counts readings) and can be told to answer like AML does under trouble: 429 with
`Retry-After`, 503, 424 with `ms-azureml-model-error-statuscode`, or 400 for requests that
hold a poison device. It records every request and the peak number in flight.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

KEY = "test-aml-key"


def readings_of(device: dict[str, Any]) -> list[dict[str, Any]]:
    """A request's device's readings, an object each, from either contract's shape.

    Contract 2 sends them in columns: ``timestamps``, ``metrics`` (names) and ``values`` (a
    row per reading, null where the reading has no value for the metric).
    """
    if "readings" in device:
        return device["readings"]
    names = device["metrics"]
    return [
        {
            "timestamp": t,
            "metrics": {n: v for n, v in zip(names, row, strict=True) if v is not None},
        }
        for t, row in zip(device["timestamps"], device["values"], strict=True)
    ]


def in_columns(answer: dict[str, Any]) -> dict[str, Any]:
    """A contract-1 answer in contract 2's shape: each device's predictions as columns."""
    devices = []
    for device in answer["devices"]:
        preds = device.get("predictions")
        if isinstance(preds, list):
            names = list(dict.fromkeys(name for pred in preds for name in pred))
            preds = {name: [pred.get(name) for pred in preds] for name in names}
        devices.append({**device, "predictions": preds})
    return {**answer, "devices": devices}


def toy_model(request: dict[str, Any]) -> dict[str, Any]:
    """Score like a model would: per device, the next state and one prediction per reading.

    It answers in contract 1's shape (a test's model may change a prediction in place); the
    stand-in turns that into columns when the request was contract 2.
    """
    out = []
    for device in request["devices"]:
        seen = (device["state"] or {}).get("seen", 0)
        preds = []
        for reading in readings_of(device):
            metrics = reading["metrics"]
            top = max(metrics, key=lambda k: abs(metrics[k]))
            anomalous = abs(metrics[top]) > 100
            preds.append(
                {
                    "timestamp": reading["timestamp"],
                    "anomaly_score": 0.97 if anomalous else 0.05,
                    "is_anomaly": anomalous,
                    "top_metric": top,
                    "failure_probability": 0.1,
                    "maintenance_due": False,
                }
            )
        out.append(
            {
                "device_id": device["device_id"],
                "state": {"seen": seen + len(preds)},
                "predictions": preds,
            }
        )
    return {"model_version": "toy-1", "devices": out}


@dataclass
class Script:
    """What the stand-in answers; tests change it between calls."""

    model: Callable[[dict[str, Any]], dict[str, Any]] = toy_model
    poison_devices: set[str] = field(default_factory=set)
    # Each entry is consumed by one call: (status, headers, body) answered instead of scoring.
    faults: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    hold: threading.Event | None = None  # when set, calls wait for it (to observe concurrency)


@dataclass
class Record:
    """What the stand-in saw."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    in_flight: int = 0
    peak_in_flight: int = 0


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        srv = self.server
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        with srv.lock:
            srv.record.in_flight += 1
            srv.record.peak_in_flight = max(srv.record.peak_in_flight, srv.record.in_flight)
        try:
            status, headers, body = self._answer(raw)
        finally:
            with srv.lock:
                srv.record.in_flight -= 1
        with srv.lock:
            srv.record.statuses.append(status)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _answer(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        srv = self.server
        if self.headers.get("Authorization") != f"Bearer {KEY}":
            return 401, {}, b"unauthorized"
        doc = json.loads(raw)
        with srv.lock:
            srv.record.requests.append(doc)
            fault = srv.script.faults.pop(0) if srv.script.faults else None
        if srv.script.hold is not None:
            srv.script.hold.wait(10)
        if fault is not None:
            return fault
        ids = {d["device_id"] for d in doc["devices"]}
        if ids & srv.script.poison_devices:
            return 400, {"Content-Type": "application/json"}, b'{"error": "bad input"}'
        answer = srv.script.model(doc)
        if doc.get("contract") == 2:
            answer = in_columns(answer)
        body = json.dumps(answer).encode()
        return 200, {"Content-Type": "application/json"}, body


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.script = Script()
        self.record = Record()


@dataclass
class AmlStandIn:
    """Handle given to tests: the URL, the script to steer it, the record to check."""

    url: str
    script: Script
    record: Record


@contextmanager
def run_aml_standin() -> Iterator[AmlStandIn]:
    """Serve on 127.0.0.1 on a free port until the block ends."""
    server = _Server()
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield AmlStandIn(f"http://{host}:{port}/score", server.script, server.record)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
