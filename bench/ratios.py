"""The design's payoff, as ratios measured in one run: each choice against the naive alternative.

    .venv/bin/python bench/ratios.py [--quick] [--json FILE]

Three pairs, both sides of a pair in the same run, so the machine's mood mostly cancels out:

* **Micro-batching** (``microbatch_vs_per_reading_ratio``): readings/s scored through
  ``azmlinfsrv`` running ``model/score.py`` with the trained artifact (one worker, as the local
  stack runs it). Batched: ``shared.microbatch.MicroBatcher`` over ``shared.scoring.AmlClient``
  with the app's default settings (2,000 rows, 1 MiB) but 2 requests in flight, not 4, to match
  the one worker (``SCORE_CONCURRENCY_HERE``), scoring 256 devices x 10 readings with their
  states. Per reading: the seed
  architecture's flow, one POST /score per reading, sequential, one device with one reading and
  its state, the returned state sent with the next reading (in the app's encoding, contract 2).
  The two sides take turns in rounds, so the machine's drift falls on both. Issue 8 accepts
  >= 150x. A second batched shape, 100 devices x 20 readings, shows how the ratio grows with
  readings per device.
* **Grouped events** (``grouped_events_vs_per_reading_ratio``): readings/s through the Event
  Hubs emulator, published with the app's publisher (``shared.publisher.EventHubPublisher``, the
  SDK's producer) while one SDK consumer reads every partition with the score host's batch
  settings, until it has every event. Grouped: the ingest's encoding (``shared.events``), one
  event per device per request, requests of 20 devices x 10 readings. Per reading: the same
  encoding with one reading per event. Events are encoded before the clock starts: this is the
  hub hop alone. Each side gets a fresh emulator, so it reads only its own events.
* **Batch transactions** (``batch_tx_vs_single_upserts_ratio``): entities/s into Azurite's
  table service. Batched: ``shared.store.TableStore.upsert_predictions`` (whatever its
  ``_submit`` does today, fanned out as configured) on a trigger batch's predictions, 256
  devices x 10. Single: one ``TableClient.upsert_entity`` per prediction, sequential, the same
  entities.

Every server is started here on a free 127.0.0.1 port and stopped before the script exits.
``measure()`` returns the figures (see ``FIGURES``); ``main()`` prints one per line with its
unit and meaning, then one JSON line. Nothing is asserted.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))  # for _common

from _common import ARTIFACTS, deployed_model, standard_main
from azure.data.tables import TableServiceClient, UpdateMode
from azure.eventhub import EventHubConsumerClient

import model.score as score_module
from local.eventhubs.runner import EmulatorThread
from local.eventhubs.semantics import partition_for_key
from shared._entities import _prediction_entity
from shared.events import OutgoingEvent, encode_device_events
from shared.microbatch import _json, build_body, next_chunk
from shared.predictions import Prediction, parse_device_result
from shared.publisher import EventHubPublisher
from shared.readings import Reading, row_key
from shared.settings import load_settings
from shared.store import TableStore
from shared.wiring import micro_batcher
from simulator.fleet import kind_metrics
from tests.support.azmlinfsrv import serve
from tests.support.azurite import run_azurite

T0 = datetime(2026, 11, 27, tzinfo=UTC)
METRICS = kind_metrics("pump")
TRIGGER_DEVICES, PER_DEVICE = 256, 10  # one trigger batch: 256 events of 10 readings
PARTITIONS = ("0", "1", "2", "3")  # the emulator's readings hub (local/eventhubs/Config.json)
_HUBS = json.loads((Path(__file__).resolve().parents[1] / "host.json").read_text())["extensions"]
CONSUME_BATCH = _HUBS["eventHubs"]["maxEventBatchSize"]  # as the score host reads the hub
CONSUME_PREFETCH = _HUBS["eventHubs"]["prefetchCount"]
WARM_READINGS, WARM_STEP_S = 500, 120  # ~17 h of history: past the detector's 12 h warm-up
# The batcher's requests in flight, matched to the one azmlinfsrv worker here: one request being
# scored while the next is encoded. The app's default, 4, matches AML's WORKER_COUNT=4 per
# instance (model/deploy); against one worker, 4 only queue there, and in two interleaved rounds
# of 40 calls 2 scored 5-10 % more readings/s (59,611 and 58,729 against 54,339 and 56,595).
SCORE_CONCURRENCY_HERE = 2

FIGURES = {
    "microbatch_readings_per_s": (
        "readings/s",
        "MicroBatcher + AmlClient to azmlinfsrv, 256 devices x 10 readings per call",
    ),
    "per_reading_requests_readings_per_s": (
        "readings/s",
        "one POST /score per reading, sequential, one device and its state",
    ),
    "microbatch_readings_per_s_100x20": (
        "readings/s",
        "the same, 100 devices x 20 readings per call",
    ),
    "microbatch_client_cpu_us_per_reading": (
        "µs CPU/reading",
        "the pipeline's side of it (MicroBatcher + AmlClient, this process), 256 x 10",
    ),
    "microbatch_client_cpu_us_per_reading_100x20": ("µs CPU/reading", "the same, 100 x 20"),
    "microbatch_vs_per_reading_ratio": ("x", "micro-batched over per-reading (issue 8: >= 150)"),
    "microbatch_vs_per_reading_ratio_100x20": ("x", "the same at 100 devices x 20 readings"),
    "microbatch_vs_per_reading_ratio_lowest_round": (
        "x",
        "the 256 x 10 ratio of the round where it was lowest (the sides take turns, 4 rounds)",
    ),
    "microbatch_vs_per_reading_ratio_highest_round": ("x", "and of the round where it was highest"),
    "microbatch_score_max_concurrency": (
        "requests",
        "SCORE_MAX_CONCURRENCY of the batched side (one azmlinfsrv worker here)",
    ),
    "grouped_events_readings_per_s": (
        "readings/s",
        "published and consumed through the emulator, one event per device per request",
    ),
    "per_reading_events_readings_per_s": (
        "readings/s",
        "published and consumed through the emulator, one event per reading",
    ),
    "grouped_events_vs_per_reading_ratio": ("x", "grouped over one event per reading"),
    "batch_tx_entities_per_s": (
        "entities/s",
        "TableStore.upsert_predictions to Azurite, 256 devices x 10 predictions per call",
    ),
    "batch_tx_client_cpu_us_per_entity": ("µs CPU/entity", "this process, batched"),
    "single_upserts_entities_per_s": (
        "entities/s",
        "one TableClient.upsert_entity per prediction, sequential",
    ),
    "single_upserts_client_cpu_us_per_entity": ("µs CPU/entity", "this process, single"),
    "batch_tx_vs_single_upserts_ratio": ("x", "batch transactions over single upserts"),
}


def pump_metrics(rng: random.Random) -> dict[str, float]:
    """One reading's metrics: a pump's six, noisy around fixed levels."""
    return {m: round(100.0 * (k + 1) + rng.gauss(0.0, 1.0), 3) for k, m in enumerate(METRICS)}


def readings_of(device_id: str, start: datetime, n: int, rng: random.Random) -> list[Reading]:
    """``n`` readings 10 s apart from ``start``."""
    return [
        Reading(device_id, start + timedelta(seconds=10 * i), pump_metrics(rng)) for i in range(n)
    ]


# --- micro-batching ------------------------------------------------------------------------


def warm_state(rng: random.Random) -> dict[str, Any]:
    """A device's state after ~17 h of readings (every device here starts from a copy of it).

    Timing fresh states would measure the warm-up path, which each device takes once.
    """
    readings = [
        {
            "timestamp": (T0 + timedelta(seconds=WARM_STEP_S * i)).isoformat(),
            "metrics": pump_metrics(rng),
        }
        for i in range(WARM_READINGS)
    ]
    request = {
        "contract": 1,
        "devices": [{"device_id": "warm", "state": None, "readings": readings}],
    }
    with deployed_model():
        return score_module.score_request(request)["devices"][0]["state"]


def measure_microbatch(*, calls: int, singles: int, rounds: int = 4) -> dict[str, float | int]:
    """Batched (two shapes) and per-reading scoring against one azmlinfsrv; readings/s of each.

    The headline shape is a full trigger batch at steady state, 256 devices x 10 readings; the
    second, 100 devices x 20 readings, is ``bench/model_scoring.py``'s HTTP shape (a backlog
    gives each device more readings per call, and per-device costs weigh less).

    The sides take turns: ``rounds`` rounds, each of ``calls / rounds`` batched calls per shape
    and then ``singles / rounds`` single readings, and each side's rate is over all of its
    rounds. This machine's speed drifts by ±10 % over a minute; measured one side after the
    other, the drift went into the ratio. The lowest and highest round's ratio are reported too.
    """
    rng = random.Random(8)
    state = warm_state(rng)
    start = T0 + timedelta(seconds=WARM_STEP_S * WARM_READINGS)
    shapes = {"": (TRIGGER_DEVICES, PER_DEVICE), "_100x20": (100, 20)}
    work = {
        suffix: {
            f"pump-{d:04d}": readings_of(f"pump-{d:04d}", start, n, rng) for d in range(devices)
        }
        for suffix, (devices, n) in shapes.items()
    }
    one = readings_of("pump-9999", start, singles + 1, rng)
    s = load_settings(
        {
            "EVENTHUB_CONNECTION": "Endpoint=sb://127.0.0.1:9;UseDevelopmentEmulator=true",
            "TABLES_CONNECTION": "UseDevelopmentStorage=true",
            "AML_ENDPOINT_URL": "http://127.0.0.1:9/score",
            "AML_ENDPOINT_KEY": "bench",
            "SCORE_MAX_CONCURRENCY": str(SCORE_CONCURRENCY_HERE),
        }
    )  # the app's defaults for everything else the batcher and client take
    elapsed = dict.fromkeys([*work, "single"], 0.0)
    cpu = dict.fromkeys(work, 0.0)
    scored = dict.fromkeys([*work, "single"], 0)
    ratios: list[float] = []
    with serve(model_dir=ARTIFACTS, workers=1) as url:
        batcher = micro_batcher(s, f"{url}/score", "bench")  # the app's own wiring
        client = batcher.scorer

        def score_one(reading: Reading, current: dict[str, Any]) -> dict[str, Any]:
            """The seed's flow: one request per reading, in the app's own encoding."""
            chunk = next_chunk(reading.device_id, [reading], 0, max_rows=1, max_bytes=1 << 20)
            body = build_body([chunk], {reading.device_id: _json(current)})
            doc = client.score(body)
            result = parse_device_result(
                doc["devices"][0], [reading], doc["model_version"], stamps=chunk.stamps
            )
            return result.state

        try:
            states = {suffix: dict.fromkeys(devices, state) for suffix, devices in work.items()}
            for suffix, devices in work.items():
                batcher.score(devices, states[suffix])  # connect and warm the worker up
            current = score_one(one[0], state)
            per_round = max(1, singles // rounds)
            for r in range(rounds):
                rates = {}
                for suffix, devices in work.items():
                    n = calls // rounds + (r < calls % rounds)
                    t, c = time.perf_counter(), time.process_time()
                    for _ in range(n):
                        outcome = batcher.score(devices, states[suffix])
                    took = time.perf_counter() - t
                    cpu[suffix] += time.process_time() - c
                    elapsed[suffix] += took
                    done = n * sum(len(res.predictions) for res in outcome.results.values())
                    scored[suffix] += done
                    rates[suffix] = done / took
                mine = one[1 + r * per_round : 1 + (r + 1) * per_round]
                t = time.perf_counter()
                for reading in mine:
                    current = score_one(reading, current)
                took = time.perf_counter() - t
                elapsed["single"] += took
                scored["single"] += len(mine)
                ratios.append(rates[""] / (len(mine) / took))
        finally:
            batcher.close()
            client.close()
    single = scored["single"] / elapsed["single"]
    figures: dict[str, float | int] = {}
    for suffix in work:
        figures[f"microbatch_readings_per_s{suffix}"] = round(scored[suffix] / elapsed[suffix])
        figures[f"microbatch_client_cpu_us_per_reading{suffix}"] = round(
            cpu[suffix] / scored[suffix] * 1e6, 1
        )
    figures["per_reading_requests_readings_per_s"] = round(single, 1)
    figures["microbatch_score_max_concurrency"] = SCORE_CONCURRENCY_HERE
    for suffix in work:
        figures[f"microbatch_vs_per_reading_ratio{suffix}"] = round(
            scored[suffix] / elapsed[suffix] / single, 1
        )
    figures["microbatch_vs_per_reading_ratio_lowest_round"] = round(min(ratios), 1)
    figures["microbatch_vs_per_reading_ratio_highest_round"] = round(max(ratios), 1)
    return figures


# --- grouped events ------------------------------------------------------------------------


def through_hub(requests_events: Sequence[list[OutgoingEvent]]) -> float:
    """Events/s through the emulator: published with the app's publisher, read as they land.

    One consumer reads every partition with the score host's batches (``maxEventBatchSize``
    and ``prefetchCount`` from host.json), as the hub is read in a live pipeline. The first
    request's events go first and are awaited on every partition, so connecting and claiming
    partitions are not counted; the clock then runs from the first publish of the rest until
    the consumer has every event.
    """
    total = sum(len(events) for events in requests_events)
    warm = len(requests_events[0])
    got = [0]
    partitions: set[str] = set()
    lock = threading.Lock()
    warmed, done = threading.Event(), threading.Event()

    def on_batch(context: Any, events: list) -> None:
        with lock:
            got[0] += len(events)
            partitions.add(context.partition_id)
            if got[0] >= warm and len(partitions) == len(PARTITIONS):
                warmed.set()
            if got[0] >= total:
                done.set()

    with (
        tempfile.TemporaryDirectory(prefix="bench-ratios-") as tmp,
        EmulatorThread(Path(tmp)) as hubs,
    ):
        conn = hubs.connection_string()
        publisher = EventHubPublisher.from_connection_string(conn, eventhub_name="readings")
        consumer = EventHubConsumerClient.from_connection_string(
            conn, consumer_group="$Default", eventhub_name="readings"
        )
        worker = threading.Thread(
            target=consumer.receive_batch,
            kwargs={
                "on_event_batch": on_batch,
                "starting_position": "-1",
                "max_batch_size": CONSUME_BATCH,
                "prefetch": CONSUME_PREFETCH,
            },
            daemon=True,
        )
        try:
            publisher.publish(requests_events[0])
            worker.start()
            if not warmed.wait(60):
                raise RuntimeError(f"warm-up: {got[0]} of {warm} events from {partitions}")
            t = time.perf_counter()
            for events in requests_events[1:]:
                publisher.publish(events)
            if not done.wait(120):
                raise RuntimeError(f"consumed {got[0]} of {total} events")
            elapsed = time.perf_counter() - t
        finally:
            publisher.close()
            consumer.close()
            worker.join(10)
    return (total - warm) / elapsed


def spread_devices(per_partition: int) -> list[str]:
    """Device ids that land ``per_partition`` on each partition, so every partition streams."""
    chosen: dict[str, list[str]] = {p: [] for p in PARTITIONS}
    n = 0
    while any(len(ids) < per_partition for ids in chosen.values()):
        device_id = f"pump-{n:04d}"
        ids = chosen[partition_for_key(device_id, list(PARTITIONS))]
        if len(ids) < per_partition:
            ids.append(device_id)
        n += 1
    return [d for ids in chosen.values() for d in ids]


def measure_events(*, grouped_requests: int, single_requests: int) -> dict[str, float | int]:
    """Grouped and per-reading events, each through a fresh emulator; readings/s of each.

    A request holds 20 devices x 10 readings, five devices per partition. The per-reading side
    sends ten times the events per reading, so it is given fewer requests for a similar number
    of events.
    """
    rng = random.Random(8)
    now = datetime.now(UTC)
    devices = spread_devices(20 // len(PARTITIONS))

    def request(r: int) -> dict[str, list[Reading]]:
        start = now - timedelta(hours=2) + timedelta(seconds=100 * r)
        return {d: readings_of(d, start, PER_DEVICE, rng) for d in devices}

    grouped = [
        encode_device_events(request(r), ingested_at=now) for r in range(grouped_requests + 1)
    ]
    single = [
        [
            event
            for device_id, readings in request(r).items()
            for reading in readings
            for event in encode_device_events({device_id: [reading]}, ingested_at=now)
        ]
        for r in range(single_requests + 1)
    ]
    grouped_rate = through_hub(grouped) * PER_DEVICE
    single_rate = through_hub(single)
    return {
        "grouped_events_readings_per_s": round(grouped_rate),
        "per_reading_events_readings_per_s": round(single_rate),
        "grouped_events_vs_per_reading_ratio": round(grouped_rate / single_rate, 1),
    }


# --- batch transactions --------------------------------------------------------------------


def predictions_of(round_: int, rng: random.Random) -> list[Prediction]:
    """A trigger batch's predictions: 256 devices x 10, timestamps of round ``round_``."""
    start = T0 + timedelta(seconds=100 * round_)
    return [
        Prediction(
            device_id=f"pump-{d:04d}",
            timestamp=start + timedelta(seconds=10 * i),
            anomaly_score=round(rng.random() * 0.1, 4),
            is_anomaly=False,
            top_metric="vibration_mm_s",
            failure_probability=round(rng.random() * 0.2, 4),
            maintenance_due=False,
            model_version=score_module.MODEL_VERSION,
            metrics=pump_metrics(rng),
        )
        for d in range(TRIGGER_DEVICES)
        for i in range(PER_DEVICE)
    ]


def measure_tables(*, calls: int, singles: int) -> dict[str, float | int]:
    """Batched store writes and single SDK upserts against one Azurite; entities/s of each."""
    rng = random.Random(8)
    batches = [predictions_of(r, rng) for r in range(calls + 1)]
    single = [p for r in range(calls + 1, calls + 100) for p in predictions_of(r, rng)][
        : singles + 1
    ]
    entities = [_prediction_entity(p, p.device_id, row_key(p.timestamp)) for p in single]
    with run_azurite() as conn:
        with TableStore.from_connection_string(conn, table_prefix="Batch") as store:
            store.upsert_predictions(batches[0])  # create tables, connect
            t, cpu = time.perf_counter(), time.process_time()
            for batch in batches[1:]:
                store.upsert_predictions(batch)
            batched_s, batched_cpu = time.perf_counter() - t, time.process_time() - cpu
        with TableServiceClient.from_connection_string(conn) as service:
            client = service.create_table_if_not_exists("SinglePredictions")
            client.upsert_entity(entities[0], mode=UpdateMode.REPLACE)
            t, cpu = time.perf_counter(), time.process_time()
            for entity in entities[1:]:
                client.upsert_entity(entity, mode=UpdateMode.REPLACE)
            single_s, single_cpu = time.perf_counter() - t, time.process_time() - cpu
    n_batched = sum(len(b) for b in batches[1:])
    n_single = len(entities) - 1
    return {
        "batch_tx_entities_per_s": round(n_batched / batched_s),
        "batch_tx_client_cpu_us_per_entity": round(batched_cpu / n_batched * 1e6, 1),
        "single_upserts_entities_per_s": round(n_single / single_s),
        "single_upserts_client_cpu_us_per_entity": round(single_cpu / n_single * 1e6, 1),
        "batch_tx_vs_single_upserts_ratio": round(
            (n_batched / batched_s) / (n_single / single_s), 2
        ),
    }


def measure(quick: bool = False) -> dict[str, float | int]:
    """All three pairs, one after the other; each pair shares its server.

    Args:
        quick: fewer calls and readings per side (about 30 s instead of about 2 minutes).
    """
    figures: dict[str, float | int] = {}
    # Each side timed for a few seconds (at 10 calls the batched side had half a second, and its
    # figure moved ±15 % from run to run with whatever else the machine was doing).
    figures.update(measure_microbatch(calls=8 if quick else 40, singles=300 if quick else 2000))
    figures.update(
        measure_events(grouped_requests=60 if quick else 300, single_requests=10 if quick else 50)
    )
    figures.update(measure_tables(calls=2 if quick else 6, singles=1000 if quick else 4000))
    return figures


def main() -> None:
    """Measure and print."""
    standard_main(measure, FIGURES, __doc__, "fewer calls and readings per side")


if __name__ == "__main__":
    main()
