"""The Table writer's cost: client CPU per stored prediction, entities/s, and Azurite's ceiling.

    .venv/bin/python bench/table_writes.py [--quick] [--json FILE]

Everything goes through ``shared.store.TableStore.upsert_predictions`` into an Azurite table
service started here (in memory, 127.0.0.1, a free port) and stopped before the script exits.
Predictions are realistic: 20 pumps' six metrics, scores and probabilities, as
``shared._entities._prediction_entity`` stores them; every call writes new rows.

* Client CPU is ``time.process_time()`` of this process only (Azurite is another process), per
  stored prediction, one writer (``max_workers=1``), 100-entity transactions: the store's lean
  ``$batch`` path (``shared.table_batch``) and, in the same run, the SDK's
  ``submit_transaction`` (the store's previous ``_submit``) for the before/after.
* The score host's own write (``TableStore.write_devices``): 10 predictions of each device with
  its state row (a 4 KB state, about a warm six-metric pump's) in one conditional transaction,
  per stored prediction, one writer.
* Entities/s for 1-, 10- and 100-entity transactions, one writer. A one-entity write is the
  store's ``upsert_entity``; the CPU of it and of a one-operation lean transaction are both
  reported, since the store picks the cheaper.
* Azurite's ceiling: the best entities/s of 1, 2 and 4 writer threads on 100-entity lean
  transactions, and Azurite's own CPU per entity (utime + stime from ``/proc/<pid>/stat``).

The machine is shared: figures are indicative. ``measure()`` returns them (see ``FIGURES``);
``main()`` prints one per line with its unit and meaning, then one JSON line. Nothing is asserted.
"""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))  # for _common

from _common import standard_main
from azure.data.tables import UpdateMode

from shared._entities import Entity, _plan, _prediction_entity
from shared.predictions import Prediction
from shared.readings import row_key
from shared.states import DeviceWrite
from shared.store import TableStore, _mapped
from shared.table_batch import Guarded, encode_upserts, upsert_transaction
from simulator.fleet import kind_metrics
from tests.support.azurite import AZURITE_BIN, AzuriteError, _answers, _free_port, _stop
from tests.support.azurite import connection_string as azurite_connection_string

DEVICES = 20
T0 = datetime(2026, 11, 27, tzinfo=UTC)
METRICS = kind_metrics("pump")
THREADS = (1, 2, 4)

FIGURES = {
    "table_write_cpu_us_per_prediction": (
        "µs CPU/prediction",
        "this process, lean $batch path, 100-entity transactions, one writer",
    ),
    "table_write_cpu_us_per_prediction_sdk": (
        "µs CPU/prediction",
        "this process, the SDK's submit_transaction, 100-entity transactions, one writer",
    ),
    "table_write_sdk_vs_lean_cpu_ratio": ("x", "SDK CPU over lean CPU per prediction"),
    "table_write_cpu_us_per_prediction_with_state": (
        "µs CPU/prediction",
        "this process, write_devices: 10 predictions per device + its 4 KB state row, one writer",
    ),
    "table_write_cpu_us_entities": (
        "µs CPU/prediction",
        "of the lean figure: building the entities and planning transactions (no I/O)",
    ),
    "table_write_cpu_us_encode": (
        "µs CPU/prediction",
        "of the lean figure: encoding the $batch bodies (shared.table_batch.encode_upserts)",
    ),
    "table_write_cpu_us_send": (
        "µs CPU/prediction",
        "of the lean figure: the rest, mostly the SDK pipeline, requests and http.client",
    ),
    "table_entities_per_s_tx1": (
        "entities/s",
        "one writer, one entity per write (the store's upsert_entity)",
    ),
    "table_entities_per_s_tx10": ("entities/s", "one writer, 10-entity lean transactions"),
    "table_entities_per_s_tx100": ("entities/s", "one writer, 100-entity lean transactions"),
    "table_entities_per_s_tx100_sdk": (
        "entities/s",
        "one writer, 100-entity transactions through the SDK",
    ),
    "table_write_cpu_us_tx1_upsert_entity": (
        "µs CPU/entity",
        "this process, one entity by upsert_entity (what the store does)",
    ),
    "table_write_cpu_us_tx1_lean": (
        "µs CPU/entity",
        "this process, one entity as a one-operation lean transaction",
    ),
    "table_write_cpu_us_tx10": ("µs CPU/entity", "this process, 10-entity lean transactions"),
    "storage_ceiling_entities_per_s": (
        "entities/s",
        "Azurite's ceiling: best of 1, 2, 4 writer threads, 100-entity lean transactions",
    ),
    "storage_ceiling_threads": ("threads", "the writer threads that reached the ceiling"),
    "azurite_cpu_us_per_entity": (
        "µs CPU/entity",
        "Azurite's own CPU (utime+stime) per entity in the ceiling runs",
    ),
}


# --- Azurite -------------------------------------------------------------------------------


@contextmanager
def azurite() -> Iterator[tuple[str, int]]:
    """Start Azurite's table service in memory; yield (connection string, its pid); stop it."""
    binary = AZURITE_BIN / "azurite-table"
    if not binary.exists():
        raise AzuriteError(f"{binary} is missing: run `npm install`")
    with tempfile.TemporaryDirectory(prefix="azurite-bench-") as workdir:
        port = _free_port()
        proc = subprocess.Popen(
            [
                str(binary),
                "--inMemoryPersistence",
                "--disableTelemetry",
                "--skipApiVersionCheck",
                "--silent",
                "--tableHost",
                "127.0.0.1",
                "--tablePort",
                str(port),
            ],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 30
            while not _answers(port):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AzuriteError(f"Azurite did not start on port {port}")
                time.sleep(0.05)
            yield azurite_connection_string(port), proc.pid
        finally:
            _stop(proc)


def cpu_seconds(pid: int) -> float:
    """A process's user + system CPU seconds so far, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- workload ------------------------------------------------------------------------------


class Fleet:
    """Predictions for 20 pumps (or `devices`), sharing each reading time as the fleet's do.

    Each call to `next` moves on in time, so rows are new.
    """

    def __init__(self, seed: int = 8, prefix: str = "pump", devices: int = DEVICES) -> None:
        self._rng = random.Random(seed)
        self._step = 0
        self._prefix = prefix
        self._devices = devices

    def next(self, per_device: int) -> list[Prediction]:
        """`per_device` predictions of each device, 10 s apart, after the previous ones."""
        rng = self._rng
        start = T0 + timedelta(seconds=10 * self._step)
        self._step += per_device
        out = []
        for i in range(per_device):
            ts = start + timedelta(seconds=10 * i)
            for d in range(self._devices):
                score = round(rng.random(), 4)
                out.append(
                    Prediction(
                        device_id=f"{self._prefix}-{d:04d}",
                        timestamp=ts,
                        anomaly_score=score,
                        is_anomaly=score > 0.95,
                        top_metric=METRICS[rng.randrange(len(METRICS))],
                        failure_probability=round(rng.random() * 0.2, 4),
                        maintenance_due=False,
                        model_version="pump-iforest-2026.11.27",
                        metrics={
                            m: round(100.0 * (k + 1) + rng.gauss(0.0, 1.0), 3)
                            for k, m in enumerate(METRICS)
                        },
                    )
                )
        return out


class SdkTableStore(TableStore):
    """`TableStore` with its previous `_submit`: every transaction through `submit_transaction`."""

    def _submit(self, table: str, batch: list[Entity], guarded: Guarded | None = None) -> None:
        if guarded is not None:
            raise NotImplementedError("upserts only")
        client = self._client(table)
        with _mapped(f"write {len(batch)} rows to {table}"):
            if len(batch) == 1:
                client.upsert_entity(batch[0], mode=UpdateMode.REPLACE)
            else:
                client.submit_transaction(
                    [("upsert", e, {"mode": UpdateMode.REPLACE}) for e in batch]
                )


class LeanSingleTableStore(TableStore):
    """`TableStore` that writes one entity as a one-operation lean transaction, for comparison."""

    def _submit(self, table: str, batch: list[Entity], guarded: Guarded | None = None) -> None:
        if guarded is not None:
            raise NotImplementedError("upserts only")
        with _mapped(f"write {len(batch)} rows to {table}"):
            upsert_transaction(self._client(table), batch)


def timed(
    store: TableStore, fleet: Fleet, *, per_device: int, calls: int
) -> tuple[float, float, int]:
    """Write `calls` times `per_device` predictions per device; return (wall s, CPU s, rows)."""
    batches = [fleet.next(per_device) for _ in range(calls)]
    store.upsert_predictions(fleet.next(per_device))  # tables, connections, imports: not timed
    wall, cpu = time.perf_counter(), time.process_time()
    for batch in batches:
        store.upsert_predictions(batch)
    return (
        time.perf_counter() - wall,
        time.process_time() - cpu,
        sum(len(b) for b in batches),
    )


def state_of(rng: random.Random) -> dict[str, object]:
    """A state of about 4 KB of JSON, the size of a warm six-metric pump's (README, "The model")."""
    per_metric = {m: [round(rng.gauss(0.0, 1.0), 6) for _ in range(24)] for m in METRICS}
    return {"v": 3, "names": METRICS, "seen": 6000, "per_metric": per_metric}


def timed_devices(store: TableStore, fleet: Fleet, *, calls: int) -> tuple[float, int]:
    """Write `calls` scored batches as the score host does; return (CPU s, predictions).

    Each batch holds 10 predictions per device, written with the device's state.
    """
    rng = random.Random(3)
    etags: dict[str, str | None] = {}
    Batch = list[tuple[str, list[Prediction], dict[str, object]]]

    def scored(predictions: list[Prediction]) -> Batch:
        by_device: dict[str, list[Prediction]] = {}
        for p in predictions:
            by_device.setdefault(p.device_id, []).append(p)
        return [(d, ps, state_of(rng)) for d, ps in by_device.items()]

    def write(batch: Batch) -> None:
        writes = [DeviceWrite(d, ps, state, etags.get(d)) for d, ps, state in batch]
        done = store.write_devices(writes, model_version="m", now=T0)
        if done.conflicts or done.refused or done.error or len(done.etags) != len(batch):
            raise RuntimeError(f"write_devices did not store every device: {done}")
        etags.update(done.etags)

    write(scored(fleet.next(10)))  # tables, connections, the state rows: not timed
    batches = [scored(fleet.next(10)) for _ in range(calls)]
    cpu = time.process_time()
    for batch in batches:
        write(batch)
    return time.process_time() - cpu, sum(len(ps) for b in batches for _, ps, _ in b)


def ceiling(
    conn: str,
    pid: int,
    fleet: Fleet,
    scale: int,
    table_prefix: Callable[[], str] = lambda: "",
    *,
    threads: Sequence[int] = THREADS,
    per_device: int | None = None,
) -> tuple[float, int, float]:
    """Azurite's write ceiling: (best entities/s, its threads, Azurite's µs CPU per entity).

    The best of `threads` writer threads on 100-entity lean transactions, each run writing
    `per_device` predictions of each device (default 100 x threads x scale) into the tables
    `table_prefix()` names; the CPU is over all the runs.
    """
    best, best_threads, server_cpu, server_rows = 0.0, 0, 0.0, 0
    for count in threads:
        with TableStore.from_connection_string(
            conn, table_prefix=table_prefix(), max_workers=count
        ) as lean:
            lean.upsert_predictions(fleet.next(100))  # tables and connections: not timed
            # One call of many transactions, fanned out over `count` writers.
            batch = fleet.next(per_device or 100 * count * scale)
            before, wall = cpu_seconds(pid), time.perf_counter()
            lean.upsert_predictions(batch)
            wall = time.perf_counter() - wall
            server_cpu += cpu_seconds(pid) - before
            server_rows += len(batch)
        if len(batch) / wall > best:
            best, best_threads = len(batch) / wall, count
    return best, best_threads, 1e6 * server_cpu / server_rows


def measure(quick: bool = False) -> dict[str, float]:
    """Start Azurite, measure every figure in `FIGURES`, stop it.

    Args:
        quick: fewer predictions per figure (about 20 s instead of about a minute).
    """
    scale = 1 if quick else 4
    figures: dict[str, float] = {}
    with azurite() as (conn, pid):
        n = 0

        def store(cls: type[TableStore] = TableStore, workers: int = 1) -> TableStore:
            nonlocal n
            n += 1
            return cls.from_connection_string(conn, table_prefix=f"b{n}", max_workers=workers)

        fleet = Fleet()
        with store() as lean:
            wall, cpu, rows = timed(lean, fleet, per_device=100, calls=2 * scale)
        figures["table_write_cpu_us_per_prediction"] = 1e6 * cpu / rows
        figures["table_entities_per_s_tx100"] = rows / wall
        predictions = [fleet.next(100) for _ in range(2 * scale)]
        cpu = time.process_time()
        planned = [
            _plan(_prediction_entity(p, p.device_id, row_key(p.timestamp)) for p in batch)
            for batch in predictions
        ]
        build = time.process_time() - cpu
        cpu = time.process_time()
        for transactions in planned:
            for transaction in transactions:
                encode_upserts(transaction, table_url=conn, version="2019-02-02")
        encode = time.process_time() - cpu
        rows = sum(len(b) for b in predictions)
        figures["table_write_cpu_us_entities"] = 1e6 * build / rows
        figures["table_write_cpu_us_encode"] = 1e6 * encode / rows
        figures["table_write_cpu_us_send"] = (
            figures["table_write_cpu_us_per_prediction"]
            - figures["table_write_cpu_us_entities"]
            - figures["table_write_cpu_us_encode"]
        )
        with store(SdkTableStore) as sdk:
            wall, cpu, rows = timed(sdk, fleet, per_device=100, calls=scale)
        figures["table_write_cpu_us_per_prediction_sdk"] = 1e6 * cpu / rows
        figures["table_entities_per_s_tx100_sdk"] = rows / wall
        figures["table_write_sdk_vs_lean_cpu_ratio"] = (
            figures["table_write_cpu_us_per_prediction_sdk"]
            / figures["table_write_cpu_us_per_prediction"]
        )
        with store() as scored:
            cpu, rows = timed_devices(scored, fleet, calls=5 * scale)
        figures["table_write_cpu_us_per_prediction_with_state"] = 1e6 * cpu / rows
        with store() as lean:
            wall, cpu, rows = timed(lean, fleet, per_device=10, calls=5 * scale)
        figures["table_entities_per_s_tx10"] = rows / wall
        figures["table_write_cpu_us_tx10"] = 1e6 * cpu / rows
        with store() as single:
            wall, cpu, rows = timed(single, fleet, per_device=1, calls=5 * scale)
        figures["table_entities_per_s_tx1"] = rows / wall
        figures["table_write_cpu_us_tx1_upsert_entity"] = 1e6 * cpu / rows
        with store(LeanSingleTableStore) as single:
            wall, cpu, rows = timed(single, fleet, per_device=1, calls=5 * scale)
        figures["table_write_cpu_us_tx1_lean"] = 1e6 * cpu / rows

        fresh = (f"c{i}" for i in itertools.count())  # a new, empty table for each run
        best, best_threads, per_entity = ceiling(conn, pid, fleet, scale, lambda: next(fresh))
        figures["storage_ceiling_entities_per_s"] = best
        figures["storage_ceiling_threads"] = best_threads
        figures["azurite_cpu_us_per_entity"] = per_entity
    return {k: round(v, 1) for k, v in figures.items()}


def main(argv: list[str] | None = None) -> None:
    """Measure and print."""
    standard_main(measure, FIGURES, __doc__, "fewer predictions per figure", argv)


if __name__ == "__main__":
    main()
