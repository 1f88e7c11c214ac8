"""The local Functions host's Event Hub half: the real SDK against the emulator and Azurite.

The functions under test live in tests/local/eventhub_app (their own host.json: batches of at
most 4, a 0.2 s wait, 50-100 ms retries), so the assertions do not depend on the app's own
score function; one test at the end runs the real score_function folder through
`python -m local.host`.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.eventhub import EventData, EventHubProducerClient
from azure.storage.blob import ContainerClient

from local.eventhubs.config import parse_config
from local.eventhubs.runner import EmulatorThread
from local.host import AppConfigError
from local.host.eventhub import EventHubHost
from local.host.eventhub_config import EventHubOptions, resolve_setting_references, thread_count
from local.host.retry import parse_retry_policy, parse_timespan
from shared.events import encode_device_events
from shared.readings import format_timestamp, group_by_device, parse_body
from shared.store import TableStore
from tests.support.aml_standin import KEY as AML_KEY
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
APP = Path(__file__).resolve().parent / "eventhub_app"
SAS_KEY = "SAS_KEY_VALUE"


# --- configuration: no emulator needed ----------------------------------------------------


def test_resolve_setting_references_replaces_each_name_and_names_a_missing_one():
    env = {"HUB": "readings", "GROUP": "scoring"}
    assert resolve_setting_references("%HUB%", env, where="f.json") == "readings"
    assert (
        resolve_setting_references("x-%HUB%-%GROUP%", env, where="f.json") == "x-readings-scoring"
    )
    assert resolve_setting_references("$Default", env, where="f.json") == "$Default"
    with pytest.raises(AppConfigError, match=r"'%NOPE%' does not resolve.*app setting NOPE"):
        resolve_setting_references("%NOPE%", env, where="f.json")


def test_eventhub_host_missing_setting_is_a_clear_error_naming_it(tmp_path):
    env = {"EHX_CONNECTION": f"Endpoint=sb://127.0.0.1:9;SharedAccessKey={SAS_KEY}"}
    env["AzureWebJobsStorage"] = "UseDevelopmentStorage=true"
    with pytest.raises(AppConfigError, match="EHX_HUB") as caught:
        EventHubHost(APP, environ=env, functions=["ehx_record"])
    assert "ehx_record" in str(caught.value)
    with pytest.raises(AppConfigError, match="app setting EHX_CONNECTION, which is not set"):
        EventHubHost(APP, environ={"EHX_HUB": "readings", "EHX_GROUP": "$Default"})
    env.update({"EHX_HUB": "readings", "EHX_GROUP": "$Default"})
    del env["AzureWebJobsStorage"]
    with pytest.raises(AppConfigError, match="AzureWebJobsStorage") as caught:
        EventHubHost(APP, environ=env)
    assert SAS_KEY not in str(caught.value)


def test_eventhub_host_resolves_bindings_and_host_json_options():
    env = {
        "EHX_CONNECTION": f"Endpoint=sb://127.0.0.1:9;SharedAccessKey={SAS_KEY};EntityPath=hub2",
        "EHX_HUB": "readings",
        "EHX_GROUP": "scoring",
        "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    }
    host = EventHubHost(APP, environ=env)
    by_name = {f.name: f for f in host.functions}
    assert sorted(by_name) == ["ehx_flaky", "ehx_gate", "ehx_record", "ehx_single"]
    assert not by_name["ehx_single"].many  # cardinality defaults to one, as in the host
    record = by_name["ehx_record"]
    # EntityPath in the connection string overrides eventHubName, as in the host.
    assert (record.eventhub_name, record.consumer_group, record.binding_name) == (
        "hub2",
        "scoring",
        "events",
    )
    assert record.many
    assert record.retry is None
    assert SAS_KEY not in repr(record)
    assert host.options == EventHubOptions(
        max_batch_size=4, max_wait_time=0.2, prefetch=16, checkpoint_frequency=1
    )
    only = EventHubHost(APP, environ=env, functions=["ehx_flaky"])
    assert [f.name for f in only.functions] == ["ehx_flaky"]
    disabled = EventHubHost(APP, environ={**env, "AzureWebJobs.ehx_flaky.Disabled": "true"})
    assert [f.name for f in disabled.functions] == ["ehx_gate", "ehx_record", "ehx_single"]
    assert "ehx_flaky" in disabled.skipped


def test_eventhub_options_default_like_the_extension_and_read_initial_offsets():
    assert EventHubOptions.from_host_json({}, where="h") == EventHubOptions(
        max_batch_size=100, max_wait_time=None, prefetch=300, checkpoint_frequency=1
    )

    def offsets(doc: dict) -> Any:
        host_json = {"extensions": {"eventHubs": {"initialOffsetOptions": doc}}}
        return EventHubOptions.from_host_json(host_json, where="h").starting_position

    assert offsets({"type": "fromStart"}) == "-1"
    assert offsets({"type": "FromEnd"}) == "@latest"
    assert offsets(
        {"type": "fromEnqueuedTime", "enqueuedTimeUtc": "2026-11-27T07:00:00Z"}
    ) == datetime(2026, 11, 27, 7, tzinfo=UTC)
    with pytest.raises(AppConfigError, match="enqueuedTimeUtc"):
        offsets({"type": "fromEnqueuedTime", "enqueuedTimeUtc": "yesterday"})
    with pytest.raises(AppConfigError, match="maxEventBatchSize"):
        EventHubOptions.from_host_json(
            {"extensions": {"eventHubs": {"maxEventBatchSize": 0}}}, where="h"
        )


def test_retry_policies_and_timespans_read_like_the_host():
    assert parse_timespan("00:00:02", where="w") == 2.0
    assert parse_timespan("1.02:03:04.5", where="w") == 86400 + 7384.5
    with pytest.raises(AppConfigError, match="TimeSpan"):
        parse_timespan("2s", where="w")
    expo = parse_retry_policy(
        {
            "strategy": "exponentialBackoff",
            "maxRetryCount": -1,
            "minimumInterval": "00:00:05",
            "maximumInterval": "00:05:00",
        },
        where="w",
    )
    assert expo is not None
    assert [expo.delay(n) for n in (1, 2, 3, 7, 8, 1000)] == [5, 10, 20, 300, 300, 300]
    fixed = parse_retry_policy(
        {"strategy": "fixedDelay", "maxRetryCount": 2, "delayInterval": "00:00:01"}, where="w"
    )
    assert fixed is not None
    assert [fixed.delay(n) for n in (1, 2, 3)] == [1.0, 1.0, None]
    assert parse_retry_policy(None, where="w") is None
    with pytest.raises(AppConfigError, match="maxRetryCount"):
        parse_retry_policy({"strategy": "fixedDelay", "delayInterval": "00:00:01"}, where="w")
    with pytest.raises(AppConfigError, match="strategy"):
        parse_retry_policy({"strategy": "linear", "maxRetryCount": 1}, where="w")


@pytest.fixture
def cli() -> Iterator[Callable[..., int]]:
    """`python -m local.host` in-process; its logging tweak is undone afterwards."""
    from local.host.__main__ import main

    azure_logger = logging.getLogger("azure")
    level = azure_logger.level
    yield main
    azure_logger.setLevel(level)


def test_cli_help_names_the_trigger_flags(cli, capsys):
    with pytest.raises(SystemExit) as exited:
        cli(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--functions", "--no-http", "--no-eventhub", "--checkpoint-container"):
        assert flag in out
    assert "Event Hub" in out


def test_cli_refuses_unknown_functions_an_empty_selection_and_missing_settings(
    cli, capsys, monkeypatch
):
    assert cli(["--app-root", str(APP), "--functions", "ehx_record,nope"]) == 2
    assert "no such function" in capsys.readouterr().err
    assert cli(["--app-root", str(APP), "--no-eventhub"]) == 2  # the app has no HTTP function
    assert "nothing to run" in capsys.readouterr().err
    monkeypatch.setenv("EHX_CONNECTION", f"Endpoint=sb://127.0.0.1:9;SharedAccessKey={SAS_KEY}")
    monkeypatch.delenv("EHX_HUB", raising=False)
    assert cli(["--app-root", str(APP), "--no-http", "--functions", "ehx_record"]) == 2
    err = capsys.readouterr().err
    assert "app setting EHX_HUB is not set" in err
    assert SAS_KEY not in err


# --- the host against the emulator and Azurite ---------------------------------------------


def emulator_config(partitions: dict[str, int]) -> Any:
    groups = [{"Name": "single"}]  # ehx_single's consumer group
    entities = [
        {"Name": name, "PartitionCount": n, "ConsumerGroups": groups}
        for name, n in partitions.items()
    ]
    namespace = {"Type": "EventHub", "Name": "emulatorNs1", "Entities": entities}
    return parse_config({"UserConfig": {"NamespaceConfig": [namespace]}})


@pytest.fixture
def hubs(tmp_path: Path) -> Iterator[EmulatorThread]:
    # Closing a consumer takes up to a second per partition (the SDK's keep-alive thread), so
    # the tests that need no load balancing read `solo`, a hub with a single partition.
    config = emulator_config({"solo": 1, "readings": 4})
    with EmulatorThread(tmp_path / "eventhubs", config=config) as emulator:
        yield emulator


@pytest.fixture
def container(azurite_blobs: str) -> str:
    return f"ehx-{uuid.uuid4().hex[:10]}"  # the host creates it


@pytest.fixture
def start_host(
    hubs: EmulatorThread, azurite_blobs: str, container: str
) -> Iterator[Callable[..., EventHubHost]]:
    """Start hosts on the test app; every one still running is stopped before the emulator."""
    started: list[EventHubHost] = []

    def start(
        functions: list[str],
        hub: str = "solo",
        settings: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> EventHubHost:
        env = {
            "EHX_CONNECTION": hubs.connection_string(),
            "EHX_HUB": hub,
            "EHX_GROUP": "$Default",
            "AzureWebJobsStorage": azurite_blobs,
            **(settings or {}),
        }
        host = EventHubHost(
            APP, environ=env, functions=functions, checkpoint_container=container, **kwargs
        )
        started.append(host.start())
        return host

    yield start
    for host in started:
        host.stop()


def _app_module(name: str) -> Any:
    """Import one of the test app's function modules (as the host will) to read what it kept."""
    sys.path.insert(0, str(APP))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(APP))


@pytest.fixture
def record() -> Any:
    module = _app_module("ehx_record")
    module.CALLS.clear()
    return module


@pytest.fixture
def single() -> Any:
    module = _app_module("ehx_single")
    module.CALLS.clear()
    return module


@pytest.fixture
def flaky() -> Any:
    module = _app_module("ehx_flaky")
    module.CALLS.clear()
    module.ATTEMPTS.clear()
    module.FAILURES = 2
    return module


def send(hubs: EmulatorThread, events: list[EventData], *, partition: str = "0") -> None:
    with EventHubProducerClient.from_connection_string(
        hubs.connection_string(), eventhub_name="solo"
    ) as producer:
        batch = producer.create_batch(partition_id=partition)
        for event in events:
            batch.add(event)
        producer.send_batch(batch)


def checkpoints(blob_conn: str, container: str, group: str = "$Default") -> dict[str, int]:
    """Partition -> checkpointed sequence number of one consumer group, read from the blobs."""
    with ContainerClient.from_connection_string(
        blob_conn, container, api_version="2019-07-07"
    ) as client:
        # Blob names: <namespace>/<hub>/<consumer group>/checkpoint/<partition>, lower case.
        return {
            blob.name.rsplit("/", 1)[1]: int(blob.metadata["sequencenumber"])
            for blob in client.list_blobs(include=["metadata"])
            if blob.name.endswith(f"/{group.lower()}/checkpoint/{blob.name.rsplit('/', 1)[1]}")
        }


def sequences(calls: list[list[Any]], partition: str = "0") -> list[int]:
    return [
        e.sequence_number
        for batch in calls
        for e in batch
        if e.metadata["PartitionContext"]["PartitionId"] == partition
    ]


@pytest.mark.stack
@pytest.mark.azurite
def test_eventhub_host_delivers_batches_with_metadata_and_checkpoints_after_success(
    hubs, start_host, record, single, azurite_blobs, container, caplog
):
    caplog.set_level(logging.DEBUG, logger="local.host")
    before = datetime.now(UTC) - timedelta(seconds=5)
    events = []
    for i in range(10):
        event = EventData(f"body-{i}".encode())
        event.properties = {"kind": "test", "n": i}
        events.append(event)
    send(hubs, events)
    with EventHubProducerClient.from_connection_string(
        hubs.connection_string(), eventhub_name="solo"
    ) as producer:
        batch = producer.create_batch(partition_key="pump-0007")
        batch.add(EventData(b"keyed"))
        producer.send_batch(batch)
    host = start_host(["ehx_record", "ehx_single"])
    assert wait_until(lambda: checkpoints(azurite_blobs, container).get("0") == 10, timeout=15)
    assert wait_until(lambda: checkpoints(azurite_blobs, container, "single").get("0") == 10)

    batches = record.CALLS
    assert all(1 <= len(b) <= 4 for b in batches)
    assert max(len(b) for b in batches) == 4
    flat = [e for b in batches for e in b]
    assert [e.get_body() for e in flat] == [f"body-{i}".encode() for i in range(10)] + [b"keyed"]
    assert [e.sequence_number for e in flat] == list(range(11))
    assert [e.partition_key for e in flat] == [None] * 10 + ["pump-0007"]
    assert all(isinstance(e.offset, int) for e in flat)
    assert all(before <= e.enqueued_time <= datetime.now(UTC) for e in flat)
    meta = batches[0][0].metadata
    assert meta["PartitionContext"] == {
        "FullyQualifiedNamespace": meta["PartitionContext"]["FullyQualifiedNamespace"],
        "EventHubName": "solo",
        "ConsumerGroup": "$Default",
        "PartitionId": "0",
    }
    assert meta["PropertiesArray"][:2] == [{"kind": "test", "n": 0}, {"kind": "test", "n": 1}]
    assert meta["SequenceNumberArray"] == [e.sequence_number for e in batches[0]]
    assert batches[-1][-1].metadata["PartitionKeyArray"][-1] == "pump-0007"
    # Cardinality one: the same events, one call each, with the single-event metadata.
    assert [(e.get_body(), e.sequence_number, e.partition_key) for e in single.CALLS] == [
        (e.get_body(), e.sequence_number, e.partition_key) for e in flat
    ]
    assert single.CALLS[0].metadata["PartitionContext"]["ConsumerGroup"] == "single"
    assert single.CALLS[0].metadata["Properties"] == {"kind": "test", "n": 0}
    assert single.CALLS[0].enqueued_time == flat[0].enqueued_time
    # Only after success: every invocation succeeded, and each checkpoint is a batch's end.
    ran = [i for i in host.invocations() if i.function == "ehx_record"]
    assert all(i.succeeded and i.attempt == 1 for i in host.invocations())
    written = {c.sequence_number for c in host.checkpoints() if c.function == "ehx_record"}
    assert written <= {i.sequence_numbers[-1] for i in ran}
    # The log names function, partition, count and outcome, and never the key.
    text = caplog.text
    assert "Executing 'Functions.ehx_record'" in text
    assert "partition 0: 4 event(s), sequence 0-3" in text
    assert "Succeeded" in text
    assert SAS_KEY not in text
    assert "AccountKey" not in text


@pytest.mark.stack
@pytest.mark.azurite
def test_eventhub_host_retries_the_same_batch_and_never_checkpoints_a_failed_one(
    hubs, start_host, flaky, azurite_blobs, container
):
    send(hubs, [EventData(f"e{i}") for i in range(3)])
    host = start_host(["ehx_flaky"])
    # The host records a checkpoint once the SDK has written it to the store: wait for both.
    assert wait_until(
        lambda: checkpoints(azurite_blobs, container).get("0") == 2 and host.checkpoints(),
        timeout=15,
    )
    assert flaky.CALLS == [(0, 1, 2)] * 3
    ran = [(i.sequence_numbers, i.attempt, i.succeeded) for i in host.invocations()]
    assert ran == [((0, 1, 2), 1, False), ((0, 1, 2), 2, False), ((0, 1, 2), 3, True)]
    assert [(c.partition, c.sequence_number) for c in host.checkpoints()] == [("0", 2)]

    # A batch that keeps failing (retry forever) is retried until the host stops, then
    # abandoned without a checkpoint.
    send(hubs, [EventData(b"poison")])
    assert wait_until(lambda: flaky.CALLS.count((3,)) >= 3, timeout=10)
    host.stop(timeout=5)
    assert not host.running
    assert len(host.checkpoints()) == 1
    assert checkpoints(azurite_blobs, container) == {"0": 2}


@pytest.mark.stack
@pytest.mark.azurite
def test_eventhub_host_restarted_resumes_from_the_checkpoint(
    hubs, start_host, record, azurite_blobs, container
):
    send(hubs, [EventData(f"a{i}") for i in range(6)])
    first = start_host(["ehx_record"])
    assert wait_until(lambda: checkpoints(azurite_blobs, container).get("0") == 5, timeout=15)
    first.stop()
    assert sequences(record.CALLS) == [0, 1, 2, 3, 4, 5]
    record.CALLS.clear()
    send(hubs, [EventData(f"b{i}") for i in range(3)])
    start_host(["ehx_record"])
    assert wait_until(lambda: checkpoints(azurite_blobs, container).get("0") == 8, timeout=15)
    assert sequences(record.CALLS) == [6, 7, 8]
    assert [e.get_body() for b in record.CALLS for e in b] == [b"b0", b"b1", b"b2"]


@pytest.mark.stack
@pytest.mark.azurite
def test_two_eventhub_hosts_share_four_partitions_and_process_every_event(
    hubs, start_host, record, azurite_blobs, container
):
    balancing = {"load_balancing_interval": 0.5, "ownership_expiration": 3.0}
    hosts = [start_host(["ehx_record"], hub="readings", **balancing) for _ in range(2)]
    sent: set[tuple[str, int]] = set()
    rounds = [0]
    producer = EventHubProducerClient.from_connection_string(
        hubs.connection_string(), eventhub_name="readings"
    )

    def processed(host: EventHubHost) -> list[tuple[str, int]]:
        return [
            (i.partition, s) for i in host.invocations() if i.succeeded for s in i.sequence_numbers
        ]

    def last_round_split() -> bool:
        # One event per partition per round (so a round's sequence number is the round number);
        # a new round goes out once the last one is processed, until it split 2 + 2.
        last = rounds[0] - 1
        a, b = ({p for p, s in processed(h) if s == last} for h in hosts)
        if last >= 0 and len(a | b) < 4:
            return False  # still on its way
        if len(a) == len(b) == 2 and a.isdisjoint(b):
            return True
        for p in "0123":
            batch = producer.create_batch(partition_id=p)
            batch.add(EventData(f"{p}-{rounds[0]}"))
            producer.send_batch(batch)
            sent.add((p, rounds[0]))
        rounds[0] += 1
        return False

    try:
        assert wait_until(last_round_split, timeout=20, interval=0.05)
        # Steady state: each host keeps its two partitions; a fresh burst is processed once.
        steady_from = {p: s for p, s in sent if s == rounds[0] - 1}
        for p in "0123":
            batch = producer.create_batch(partition_id=p)
            for i in range(5):
                batch.add(EventData(f"{p}-steady-{i}"))
            producer.send_batch(batch)
        expected = {(p, steady_from[p] + 1 + i) for p in "0123" for i in range(5)}
        assert wait_until(
            lambda: expected <= set(processed(hosts[0]) + processed(hosts[1])), timeout=10
        )
    finally:
        producer.close()
    everything = processed(hosts[0]) + processed(hosts[1])
    assert sent | expected <= set(everything)  # every event at least once
    steady = [e for e in everything if e in expected]
    assert sorted(steady) == sorted(expected)  # and the steady-state ones exactly once
    assert all(processed(h) for h in hosts)


def test_thread_count_reads_the_workers_setting_and_names_it_when_wrong():
    assert thread_count({}) == min(32, (os.cpu_count() or 1) + 4)
    assert thread_count({"PYTHON_THREADPOOL_THREAD_COUNT": "1"}) == 1
    assert thread_count({"PYTHON_THREADPOOL_THREAD_COUNT": " 32 "}) == 32
    for bad in ("0", "33", "four", "-2"):
        with pytest.raises(AppConfigError, match="PYTHON_THREADPOOL_THREAD_COUNT"):
            thread_count({"PYTHON_THREADPOOL_THREAD_COUNT": bad})


@pytest.fixture
def gate() -> Any:
    module = _app_module("ehx_gate")
    module.CALLS.clear()
    module.OTHERS.clear()
    module.ZERO_STARTED.clear()
    return module


def _gated_run(hubs: EmulatorThread, start_host: Any, gate: Any, threads: str) -> list[Any]:
    """Two batches on partition 0, then one on partition 1; what the gate function saw."""
    host = start_host(
        ["ehx_gate"], hub="readings", settings={"PYTHON_THREADPOOL_THREAD_COUNT": threads}
    )
    assert host.threads == int(threads)
    with EventHubProducerClient.from_connection_string(
        hubs.connection_string(), eventhub_name="readings"
    ) as producer:
        for partition, count in (("0", 6), ("1", 1)):
            batch = producer.create_batch(partition_id=partition)
            for i in range(count):
                batch.add(EventData(f"{partition}-{i}"))
            producer.send_batch(batch)
            # Partition 1's event goes out once partition 0's first batch is waiting at the gate.
            assert wait_until(gate.ZERO_STARTED.is_set, timeout=30)
    done = lambda: sum(len(s) for p, s, _ in gate.CALLS if p == "0") == 6  # noqa: E731
    assert wait_until(lambda: done() and any(p == "1" for p, _, _ in gate.CALLS), timeout=30)
    return list(gate.CALLS)


@pytest.mark.stack
@pytest.mark.azurite
def test_batches_of_different_partitions_run_side_by_side_each_partition_in_order(
    hubs, start_host, gate
):
    calls = _gated_run(hubs, start_host, gate, threads="4")
    first = next(c for c in calls if c[0] == "0")
    assert first[2], "partition 0's batch waited alone: partition 1 never ran beside it"
    zero = [s for p, seqs, _ in calls if p == "0" for s in seqs]
    assert zero == sorted(zero) == list(range(6))  # batches of 4 + 2, one at a time, in order


@pytest.mark.stack
@pytest.mark.azurite
def test_one_worker_thread_runs_one_batch_at_a_time(hubs, start_host, gate):
    calls = _gated_run(hubs, start_host, gate, threads="1")
    assert not next(c for c in calls if c[0] == "0")[2]  # the gate timed out: nothing beside it


# --- the real score_function under `python -m local.host` -----------------------------------


@pytest.mark.stack
@pytest.mark.azurite
def test_cli_runs_the_real_score_function_and_predictions_are_stored(
    azurite_blobs, azurite_tables, aml, tmp_path
):
    # One partition keeps the host's shutdown short (see `hubs`); sharing is tested above.
    with EmulatorThread(tmp_path / "eventhubs", config=emulator_config({"readings": 1})) as hubs:
        run_score_host(hubs, azurite_blobs, azurite_tables, aml.url, tmp_path)


def run_score_host(
    hubs: EmulatorThread, azurite_blobs: str, azurite_tables: str, aml_url: str, tmp_path: Path
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    store = TableStore.from_connection_string(azurite_tables, table_prefix=prefix, retry_total=0)
    store.create_tables()
    settings = tmp_path / "local.settings.json"
    values = {
        "FUNCTIONS_WORKER_RUNTIME": "python",
        "AzureWebJobsStorage": azurite_blobs,
        "EVENTHUB_CONNECTION": hubs.connection_string(),
        "EVENTHUB_NAME": "readings",
        "EVENTHUB_CONSUMER_GROUP": "$Default",
        "TABLES_CONNECTION": azurite_tables,
        "TABLE_PREFIX": prefix,
        "AML_ENDPOINT_URL": aml_url,
        "AML_ENDPOINT_KEY": AML_KEY,
    }
    settings.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
    env = {k: v for k, v in os.environ.items() if k not in values}
    env["PYTHONPATH"] = str(ROOT)
    now = datetime.now(UTC).replace(microsecond=0)
    readings = parse_body(
        json.dumps(
            [
                {
                    "device_id": device,
                    "timestamp": format_timestamp(now - timedelta(seconds=10 * (3 - i))),
                    "metrics": {"temperature_c": 60.0 + i, "rpm": 500.0 if i == 1 else 50.0},
                }
                for device in ("pump-0001", "fan-0002")
                for i in range(3)
            ]
        ).encode(),
        now=now,
    )
    with EventHubProducerClient.from_connection_string(
        hubs.connection_string(), eventhub_name="readings"
    ) as producer:
        for outgoing in encode_device_events(group_by_device(readings), ingested_at=now):
            batch = producer.create_batch(partition_key=outgoing.partition_key)
            batch.add(EventData(outgoing.body))
            producer.send_batch(batch)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "local.host",
            "--app-root",
            str(ROOT),
            "--settings",
            str(settings),
            "--functions",
            "score_function",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    window = {"start": now - timedelta(hours=1), "end": now + timedelta(hours=1), "limit": 10}
    try:
        stored = wait_until(
            lambda: all(
                len(store.list_predictions(d, **window).items) == 3
                for d in ("pump-0001", "fan-0002")
            ),
            timeout=20,
            interval=0.2,
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=20)
        store.close()
    assert stored, output
    assert proc.returncode == 0, output
    assert "score_function" in output
    assert "Executed 'Functions.score_function' (Succeeded" in output
    assert "Host stopped." in output
    assert SAS_KEY not in output
    assert AML_KEY not in output
