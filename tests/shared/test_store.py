"""One contract suite for both table stores, plus what only one of them can show.

Every test taking `store` runs against `InMemoryTableStore` and against `TableStore` on Azurite.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import ClassVar

import pytest
from azure.data.tables import TableServiceClient

from shared.deadletters import DeadLetter
from shared.errors import ConfigError, PermanentError, TransientError
from shared.predictions import Prediction
from shared.states import DeviceWrite
from shared.store import InMemoryTableStore, PredictionPage, TableStore
from tests.support.azurite import connection_string
from tests.support.http_server import QuietHandler, serving

# Registers the Azurite fixtures when the root conftest does not import them yet; a conftest
# import, once there, takes precedence and the session still starts one Azurite.

T0 = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
FAR = {"start": T0 - timedelta(days=30), "end": T0 + timedelta(days=1)}


def pred(device: str, ts: datetime, *, anomaly: bool = False, **extra: object) -> Prediction:
    return Prediction(
        device_id=device,
        timestamp=ts,
        anomaly_score=0.9 if anomaly else 0.1,
        is_anomaly=anomaly,
        top_metric="rpm" if anomaly else None,
        failure_probability=0.25,
        maintenance_due=False,
        model_version="m-1",
        metrics={"rpm": 50.0, "temperature_c": 60.5},
        extra=dict(extra),
    )


def letter(payload: str, **kwargs: object) -> DeadLetter:
    fields = {
        "reason": "undecodable event: body: not JSON",
        "source": "event",
        "occurred_at": T0,
        "partition": "3",
        "offset": "4096",
        "sequence_number": 7,
        "device_id": None,
    } | kwargs
    return DeadLetter(payload=payload, **fields)


def every_page(store, device: str, **kwargs) -> tuple[list[dict], int]:
    """Follow `next_after` to the end; return all items and the number of pages."""
    items: list[dict] = []
    pages = 0
    after = None
    while True:
        page = store.list_predictions(device, after=after, **kwargs)
        items += page.items
        pages += 1
        if page.next_after is None:
            return items, pages
        after = page.next_after


@pytest.fixture(params=["memory", pytest.param("azurite", marks=pytest.mark.azurite)])
def store(request):
    if request.param == "memory":
        return InMemoryTableStore()
    return request.getfixturevalue("table_store")


# --- predictions ---------------------------------------------------------------------------


def test_store_upsert_predictions_round_trips_the_json_form(store):
    p = Prediction(
        device_id="pump-0007",
        timestamp=datetime(2026, 11, 27, 7, 0, 0, 123000, tzinfo=UTC),
        anomaly_score=0.03,
        is_anomaly=False,
        top_metric=None,
        failure_probability=None,
        maintenance_due=None,
        model_version="iforest-3",
        metrics={"vibration_mm_s": 3.1, "temperature_c": 71.25},
        extra={
            "horizon": 12,
            "big": 2**40,
            "huge": 2**70,
            "forecast": 1.5,
            "whole": 2.0,
            "label": "ok",
            "flag": True,
            "gone": None,
        },
    )
    store.upsert_predictions([p])
    page = store.list_predictions("pump-0007", **FAR)
    assert page == PredictionPage(
        [
            {
                "device_id": "pump-0007",
                "timestamp": "2026-11-27T07:00:00.123Z",
                "anomaly_score": 0.03,
                "is_anomaly": False,
                "top_metric": None,
                "failure_probability": None,
                "maintenance_due": None,
                "model_version": "iforest-3",
                "metrics": {"vibration_mm_s": 3.1, "temperature_c": 71.25},
                "horizon": 12,
                "big": 2**40,
                "huge": float(2**70),
                "forecast": 1.5,
                "whole": 2.0,
                "label": "ok",
                "flag": True,
            }
        ],
        None,
    )
    assert type(page.items[0]["big"]) is int
    assert type(page.items[0]["whole"]) is float


def test_store_upsert_predictions_twice_leaves_one_row_per_reading(store):
    batch = [pred("a", T0 + timedelta(seconds=i)) for i in range(5)]
    store.upsert_predictions(batch)
    store.upsert_predictions(batch)
    store.upsert_predictions([batch[0], batch[0]])  # a duplicate inside one transaction
    rows = store.list_predictions("a", **FAR, limit=1000).items
    assert rows == [p.to_json() for p in batch]


def test_store_upsert_predictions_replaces_the_whole_row(store):
    store.upsert_predictions([pred("a", T0, horizon=3, label="first")])
    store.upsert_predictions([pred("a", T0, anomaly=True, horizon=4)])
    assert store.list_predictions("a", **FAR).items == [
        pred("a", T0, anomaly=True, horizon=4).to_json()
    ]


def test_store_upsert_predictions_keeps_the_last_of_duplicates_in_one_call(store):
    store.upsert_predictions([pred("a", T0, horizon=1), pred("a", T0, horizon=2)])
    assert [r["horizon"] for r in store.list_predictions("a", **FAR).items] == [2]


def test_store_upsert_predictions_writes_many_devices_and_more_than_one_transaction(store):
    batch = [pred(d, T0 + timedelta(seconds=i)) for d in ("a", "b", "c") for i in range(250)]
    store.upsert_predictions(batch)
    for device in ("a", "b", "c"):
        rows = store.list_predictions(device, **FAR, limit=1000).items
        assert rows == [p.to_json() for p in batch if p.device_id == device]


def test_store_list_predictions_is_start_inclusive_and_end_exclusive(store):
    store.upsert_predictions([pred("a", T0 + timedelta(minutes=m)) for m in range(5)])
    page = store.list_predictions(
        "a", start=T0 + timedelta(minutes=1), end=T0 + timedelta(minutes=3)
    )
    assert [r["timestamp"] for r in page.items] == [
        "2026-11-27T07:01:00.000Z",
        "2026-11-27T07:02:00.000Z",
    ]
    assert page.next_after is None


def test_store_list_predictions_sub_millisecond_bounds_round_up(store):
    store.upsert_predictions([pred("a", T0), pred("a", T0 + timedelta(milliseconds=1))])
    page = store.list_predictions(
        "a", start=T0 + timedelta(microseconds=1), end=T0 + timedelta(microseconds=1001)
    )
    assert [r["timestamp"] for r in page.items] == ["2026-11-27T07:00:00.001Z"]


def test_store_list_predictions_pages_oldest_first(store):
    batch = [pred("a", T0 + timedelta(seconds=i)) for i in range(7)]
    store.upsert_predictions(batch)
    first = store.list_predictions("a", **FAR, limit=3)
    assert first.next_after == "20261127T070002.000Z"
    items, pages = every_page(store, "a", **FAR, limit=3)
    assert (items, pages) == ([p.to_json() for p in batch], 3)


def test_store_list_predictions_exact_limit_ends_without_a_next_page(store):
    store.upsert_predictions([pred("a", T0 + timedelta(seconds=i)) for i in range(3)])
    assert store.list_predictions("a", **FAR, limit=3).next_after is None
    assert store.list_predictions("a", **FAR, limit=3, newest_first=True).next_after is None


def test_store_list_predictions_pages_newest_first_across_time_windows(store):
    # 30 readings 7 hours apart: pages must cross several of the backwards windows.
    batch = [pred("a", T0 - timedelta(hours=7 * k)) for k in range(30)]
    store.upsert_predictions([*batch, pred("a", T0 + timedelta(days=2)), pred("b", T0)])
    items, pages = every_page(
        store,
        "a",
        start=T0 - timedelta(days=9),
        end=T0 + timedelta(days=1),
        limit=4,
        newest_first=True,
    )
    assert [r["timestamp"] for r in items] == [p.to_json()["timestamp"] for p in batch]
    assert pages == 8


def test_store_list_predictions_newest_first_stops_at_start(store):
    store.upsert_predictions([pred("a", T0 - timedelta(days=d)) for d in range(4)])
    page = store.list_predictions(
        "a", start=T0 - timedelta(days=2), end=T0 + timedelta(seconds=1), newest_first=True
    )
    assert [r["timestamp"] for r in page.items] == [
        "2026-11-27T07:00:00.000Z",
        "2026-11-26T07:00:00.000Z",
        "2026-11-25T07:00:00.000Z",
    ]
    assert page.next_after is None


def test_store_list_predictions_anomalies_only_both_orders(store):
    batch = [pred("a", T0 + timedelta(seconds=i), anomaly=i % 3 == 0) for i in range(10)]
    store.upsert_predictions(batch)
    expected = [p.to_json() for p in batch if p.is_anomaly]
    assert every_page(store, "a", **FAR, anomalies_only=True, limit=2) == (expected, 2)
    newest = every_page(store, "a", **FAR, anomalies_only=True, limit=3, newest_first=True)
    assert newest == (expected[::-1], 2)


def test_store_list_predictions_treats_a_hostile_device_id_as_a_plain_key(store):
    store.upsert_predictions([pred("a", T0)])
    page = store.list_predictions("x' or PartitionKey ne 'x", **FAR)
    assert page == PredictionPage([], None)


def test_store_list_predictions_empty_range_returns_an_empty_page(store):
    assert store.list_predictions("a", start=T0, end=T0) == PredictionPage([], None)


def test_store_list_predictions_rejects_a_malformed_after(store):
    with pytest.raises(ValueError, match="after is not a Predictions RowKey"):
        store.list_predictions("a", **FAR, after="zzz")


# --- anomalies -----------------------------------------------------------------------------


def test_store_upsert_anomalies_indexes_only_anomalies_by_utc_day(store):
    late = datetime(2026, 11, 27, 23, 59, 59, tzinfo=UTC)
    batch = [
        pred("b", T0, anomaly=True),
        pred("a", T0, anomaly=True),
        pred("a", T0 + timedelta(seconds=1)),
        pred("c", late, anomaly=True),
        pred("c", late + timedelta(seconds=1), anomaly=True),
    ]
    store.upsert_anomalies(batch)
    store.upsert_anomalies(batch)  # redelivery
    day = store.list_anomalies(date(2026, 11, 27))
    assert day == PredictionPage([batch[1].to_json(), batch[0].to_json(), batch[3].to_json()], None)
    assert store.list_anomalies(date(2026, 11, 28)).items == [batch[4].to_json()]
    assert store.list_anomalies(date(2026, 11, 26)) == PredictionPage([], None)


def test_store_list_anomalies_pages_with_after(store):
    store.upsert_anomalies([pred(f"d{i}", T0, anomaly=True) for i in range(5)])
    first = store.list_anomalies(date(2026, 11, 27), limit=3)
    assert [r["device_id"] for r in first.items] == ["d0", "d1", "d2"]
    assert first.next_after == "20261127T070000.000Z_d2"
    rest = store.list_anomalies(date(2026, 11, 27), limit=3, after=first.next_after)
    assert ([r["device_id"] for r in rest.items], rest.next_after) == (["d3", "d4"], None)


# --- device state --------------------------------------------------------------------------


def test_store_get_states_returns_none_for_unknown_devices(store):
    store.upsert_states({"a": {"seen": 5, "mean": [1.5, 2.0]}}, model_version="m-1", now=T0)
    assert store.get_states(["a", "b", "a"]) == {"a": {"seen": 5, "mean": [1.5, 2.0]}, "b": None}
    assert store.get_states([]) == {}


def test_store_upsert_states_replaces_the_state(store):
    store.upsert_states({"a": {"seen": 1}, "b": {"seen": 2}}, model_version="m-1", now=T0)
    store.upsert_states({"a": {"seen": 3}}, model_version="m-2", now=T0)
    assert store.get_states(["a", "b"]) == {"a": {"seen": 3}, "b": {"seen": 2}}


def test_store_get_states_reads_many_devices(store):
    states = {f"dev-{i:04d}": {"seen": i} for i in range(60)}
    store.upsert_states(states, model_version="m-1", now=T0)
    assert store.get_states([*states, "nobody"]) == {**states, "nobody": None}


def test_store_upsert_states_splits_a_long_state(store):
    state = {"history": "é" * 70_000, "emoji": "\U0001f600" * 20_000}  # > 2 properties of text
    store.upsert_states({"a": state}, model_version="m-1", now=T0)
    assert store.get_states(["a"]) == {"a": state}


def test_store_upsert_states_refuses_a_state_too_large_for_one_entity(store):
    with pytest.raises(PermanentError, match="state of device 'b' is"):
        store.upsert_states(
            {"a": {"ok": 1}, "b": {"blob": "x" * 500_000}}, model_version="m", now=T0
        )
    assert store.get_states(["a", "b"]) == {"a": None, "b": None}


# --- predictions with their state ------------------------------------------------------------


def write(device: str, n: int, state: dict, etag: str | None, *, start: int = 0) -> DeviceWrite:
    return DeviceWrite(
        device, [pred(device, T0 + timedelta(seconds=start + i)) for i in range(n)], state, etag
    )


def test_store_write_devices_stores_predictions_and_state_with_the_new_etag(store):
    done = store.write_devices(
        [write("a", 3, {"seen": 3}, None), write("b", 1, {"seen": 1}, None)],
        model_version="m-1",
        now=T0,
    )
    assert (done.conflicts, done.refused, done.error) == ([], {}, None)
    stored = store.get_versioned_states(["a", "b"])
    assert {d: (state, done.etags[d]) for d, (state, _) in stored.items()} == stored
    assert stored["a"][0] == {"seen": 3}
    assert len(store.list_predictions("a", **FAR).items) == 3
    again = store.write_devices(
        [write("a", 2, {"seen": 5}, done.etags["a"], start=3)], model_version="m-1", now=T0
    )
    assert again.etags["a"] not in (None, done.etags["a"])
    assert store.get_states(["a"]) == {"a": {"seen": 5}}


def test_store_write_devices_stale_state_stores_nothing_of_that_device(store):
    first = store.write_devices([write("a", 1, {"seen": 1}, None)], model_version="m", now=T0)
    store.upsert_states({"a": {"seen": 9}}, model_version="m", now=T0)  # another worker
    done = store.write_devices(
        [write("a", 2, {"seen": 3}, first.etags["a"], start=1), write("b", 1, {"seen": 1}, None)],
        model_version="m",
        now=T0,
    )
    assert (done.conflicts, list(done.etags)) == (["a"], ["b"])
    assert store.get_states(["a"]) == {"a": {"seen": 9}}
    assert len(store.list_predictions("a", **FAR).items) == 1  # the stale transaction's 2 are not
    created = store.write_devices([write("a", 1, {"seen": 2}, None)], model_version="m", now=T0)
    assert created.conflicts == ["a"]  # "there was no row" while there is one


def test_store_write_devices_over_100_predictions_lands_state_in_the_last_transaction(store):
    done = store.write_devices([write("a", 250, {"seen": 250}, None)], model_version="m", now=T0)
    assert list(done.etags) == ["a"]
    items, _ = every_page(store, "a", limit=1000, **FAR)
    assert len(items) == 250  # and no state row among them
    assert store.get_states(["a"]) == {"a": {"seen": 250}}


def test_store_write_devices_a_refused_device_does_not_hold_back_the_others(store):
    oversized = {f"note{i}": "x" * 32_000 for i in range(40)}  # over 1 MiB as the service counts
    big = DeviceWrite("big", [pred("big", T0, **oversized)], {"seen": 1}, None)
    done = store.write_devices([big, write("ok", 2, {"seen": 2}, None)], model_version="m", now=T0)
    assert list(done.etags) == ["ok"]
    assert done.refused["big"].startswith("table service refused the predictions")
    assert store.get_states(["big", "ok"]) == {"big": None, "ok": {"seen": 2}}


def test_in_memory_store_write_devices_reports_a_transient_failure_and_what_landed():
    class Flaky(InMemoryTableStore):
        def _submit(self, table, batch, guarded=None):
            rows = [*batch, guarded.entity] if guarded is not None else batch
            if rows[0]["PartitionKey"] == "down":
                raise TransientError("table storage answered 503")
            return super()._submit(table, batch, guarded)

    store = Flaky()
    done = store.write_devices(
        [write("down", 1, {"seen": 1}, None), write("up", 1, {"seen": 1}, None)],
        model_version="m",
        now=T0,
    )
    assert isinstance(done.error, TransientError)
    assert list(done.etags) == ["up"]
    assert store.get_states(["down", "up"]) == {"down": None, "up": {"seen": 1}}


def test_in_memory_store_write_devices_rides_the_state_in_the_predictions_transaction():
    store = InMemoryTableStore()
    store.write_devices(
        [write("a", 99, {"s": 1}, None), write("b", 100, {"s": 1}, None)], model_version="m", now=T0
    )
    assert store.transactions == 3  # a: 99 + state; b: 100, then the state alone


# --- dead letters --------------------------------------------------------------------------


def test_store_add_dead_letters_round_trips_and_redelivery_does_not_duplicate(store):
    first = letter("\\xff not json")
    second = letter('{"schema": 9}', source="model", device_id="bad", sequence_number=2**40)
    store.add_dead_letters([first, second])
    store.add_dead_letters([first])
    page = store.list_dead_letters(date(2026, 11, 27))
    expected = {
        first.row_key: {
            "id": first.row_key,
            "payload": "\\xff not json",
            "reason": "undecodable event: body: not JSON",
            "source": "event",
            "occurred_at": "2026-11-27T07:00:00.000Z",
            "partition": "3",
            "offset": "4096",
            "sequence_number": 7,
            "device_id": None,
            "payload_truncated": False,
            "payload_bytes": None,
            "payload_sha256": None,
        },
        second.row_key: {
            "id": second.row_key,
            "payload": '{"schema": 9}',
            "reason": "undecodable event: body: not JSON",
            "source": "model",
            "occurred_at": "2026-11-27T07:00:00.000Z",
            "partition": "3",
            "offset": "4096",
            "sequence_number": 2**40,
            "device_id": "bad",
            "payload_truncated": False,
            "payload_bytes": None,
            "payload_sha256": None,
        },
    }
    assert page == PredictionPage([expected[k] for k in sorted(expected)], None)


def test_store_add_dead_letters_splits_a_long_payload_whole(store):
    payload = ("ab\U0001f600" * 40_000)[:-1] + "é"  # 120,000 code points, 160,000 UTF-16 units
    store.add_dead_letters([letter(payload)])
    [item] = store.list_dead_letters(date(2026, 11, 27)).items
    assert (item["payload"], item["payload_truncated"]) == (payload, False)


def test_store_add_dead_letters_truncates_an_oversized_payload_and_warns(store, caplog):
    payload = "0123456789" * 100_000  # 1,000,000 characters: 2 MB as the service counts
    with caplog.at_level(logging.WARNING, logger="shared.store"):
        store.add_dead_letters([letter(payload)])
    [item] = store.list_dead_letters(date(2026, 11, 27)).items
    assert item["payload"] == payload[:448_000]
    assert (item["payload_truncated"], item["payload_bytes"], item["payload_sha256"]) == (
        True,
        1_000_000,
        hashlib.sha256(payload.encode()).hexdigest(),
    )
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "1000000-byte payload" in caplog.records[0].getMessage()


def test_store_list_dead_letters_pages_by_id(store):
    letters = [letter(f"payload {i}") for i in range(5)]
    store.add_dead_letters(letters)
    ids = sorted(x.row_key for x in letters)
    first = store.list_dead_letters(date(2026, 11, 27), limit=2)
    assert ([x["id"] for x in first.items], first.next_after) == (ids[:2], ids[1])
    second = store.list_dead_letters(date(2026, 11, 27), limit=2, after=first.next_after)
    third = store.list_dead_letters(date(2026, 11, 27), limit=2, after=second.next_after)
    assert [x["id"] for x in second.items + third.items] == ids[2:]
    assert third.next_after is None


# --- limits both stores enforce ------------------------------------------------------------


@pytest.mark.parametrize("device", ["a/b", "a#b", "a?b", "a\\b", "a\tb", "x" * 513])
def test_store_rejects_keys_the_service_refuses(store, device):
    with pytest.raises(PermanentError) as caught:
        store.get_states([device])
    assert caught.value.status == 400
    with pytest.raises(PermanentError):
        store.upsert_predictions([pred(device, T0)])


def test_store_string_property_limit_is_32k_utf16_units(store):
    store.upsert_predictions([pred("a", T0, note="\U0001f600" * 16_384)])  # exactly 32,768 units
    with pytest.raises(PermanentError) as caught:
        store.upsert_predictions([pred("a", T0, note="x" * 32_769)])
    assert caught.value.status == 400
    assert store.list_predictions("a", **FAR).items[0]["note"] == "\U0001f600" * 16_384


def test_store_refuses_an_entity_over_one_mib(store):
    extra = {f"note{i}": "x" * 32_000 for i in range(40)}  # 2.5 MB as Azure counts, 1.3 as UTF-8
    with pytest.raises(PermanentError) as caught:
        store.upsert_predictions([pred("a", T0, **extra)])
    assert caught.value.status == 400
    assert store.list_predictions("a", **FAR).items == []


def test_store_splits_transactions_by_payload_size(store):
    batch = [pred("a", T0 + timedelta(seconds=i), note="y" * 30_000) for i in range(150)]
    store.upsert_predictions(batch)  # ~4.6 MB for one partition: needs at least two transactions
    assert store.list_predictions("a", **FAR, limit=1000).items == [p.to_json() for p in batch]


def test_store_create_tables_is_idempotent(store):
    store.create_tables()
    store.create_tables()
    store.upsert_predictions([pred("a", T0)])
    assert len(store.list_predictions("a", **FAR).items) == 1


def test_store_rejects_a_prefix_that_is_not_alphanumeric():
    with pytest.raises(ConfigError, match="table_prefix"):
        InMemoryTableStore(table_prefix="bad-prefix")
    with pytest.raises(ConfigError, match="table_prefix"):
        TableStore.from_connection_string(connection_string(9), table_prefix="9lives")


# --- in memory only ------------------------------------------------------------------------


def test_in_memory_store_batches_by_partition_and_100_operations():
    store = InMemoryTableStore()
    store.upsert_predictions(
        [pred(d, T0 + timedelta(seconds=i)) for d in ("a", "b") for i in range(250)]
    )
    assert store.transactions == 6  # 100 + 100 + 50 per device


def test_in_memory_store_batches_by_payload_size():
    store = InMemoryTableStore()
    store.upsert_predictions(
        [pred("a", T0 + timedelta(seconds=i), note="y" * 30_000) for i in range(150)]
    )
    assert store.transactions == 2


def test_in_memory_store_refuses_more_than_252_properties_as_azure_does():
    # Azurite accepts these; Azure refuses them, and this store follows Azure.
    store = InMemoryTableStore()
    with pytest.raises(PermanentError, match="TooManyProperties"):
        store.upsert_predictions([pred("a", T0, **{f"x{i}": i for i in range(250)})])


def test_in_memory_store_before_create_tables_creates_them_on_first_use():
    store = InMemoryTableStore(table_prefix="dev1")
    assert store.get_states(["a"]) == {"a": None}
    assert store.table_name("Predictions") == "dev1Predictions"


# --- Azure Table Storage only ---------------------------------------------------------------


@pytest.mark.azurite
def test_table_store_writes_are_idempotent_counted_by_a_raw_query(table_store, azurite_tables):
    batch = [pred("a", T0 + timedelta(seconds=i), anomaly=i == 2) for i in range(120)]
    for _ in range(2):
        table_store.upsert_predictions(batch)
        table_store.upsert_anomalies(batch)
    with TableServiceClient.from_connection_string(azurite_tables) as service:
        predictions = service.get_table_client(table_store.table_name("Predictions"))
        anomalies = service.get_table_client(table_store.table_name("Anomalies"))
        counted = (
            len(list(predictions.query_entities("PartitionKey eq @pk", parameters={"pk": "a"}))),
            len(list(anomalies.list_entities())),
        )
    assert counted == (120, 1)


@pytest.mark.azurite
def test_table_store_stores_long_text_over_numbered_properties(table_store, azurite_tables):
    table_store.upsert_states({"a": {"blob": "z" * 70_000}}, model_version="m-1", now=T0)
    with TableServiceClient.from_connection_string(azurite_tables) as service:
        raw = service.get_table_client(table_store.table_name("Predictions")).get_entity(
            "a", "state"
        )
    assert sorted(raw) == [
        "PartitionKey",
        "RowKey",
        "model_version",
        "state_0",
        "state_1",
        "state_2",
        "updated_at",
    ]
    assert (raw["model_version"], raw["updated_at"]) == ("m-1", "2026-11-27T07:00:00.000Z")


@pytest.mark.azurite
def test_table_store_wrong_account_key_is_a_permanent_error_without_the_key(azurite_tables):
    wrong = azurite_tables.replace("AccountKey=Eby8", "AccountKey=AAAA")
    store = TableStore.from_connection_string(wrong, table_prefix="wrongkey")
    with store, pytest.raises(PermanentError) as caught:
        store.get_states(["a"])
    assert caught.value.status == 403
    assert "AccountKey" not in str(caught.value)
    assert "AAAA" not in str(caught.value)


def test_table_store_unreachable_service_is_a_transient_error_within_seconds():
    with socket.socket() as sock:  # bound but not listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        began = time.monotonic()
        conn = connection_string(sock.getsockname()[1])
        store = TableStore.from_connection_string(conn, retry_total=1)
        with store, pytest.raises(TransientError, match="unreachable"):
            store.get_states(["a"])
    assert time.monotonic() - began < 5


class _Canned(QuietHandler):
    status = 503
    headers_out: ClassVar[dict[str, str]] = {}

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        body = b'{"odata.error":{"code":"ServerBusy","message":{"value":"busy"}}}'
        self.reply(self.status, body, self.headers_out)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer


@pytest.fixture
def canned_server() -> Iterator[type[_Canned]]:
    handler = type("Handler", (_Canned,), {"status": 503, "headers_out": {}})
    with serving(handler) as port:
        handler.port = port
        yield handler


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (503, {"Retry-After": "7"}, (TransientError, 7.0)),
        (429, {"x-ms-retry-after-ms": "1500"}, (TransientError, 1.5)),
        (408, {}, (TransientError, None)),
        (500, {"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}, (TransientError, None)),
        (400, {}, (PermanentError, 400)),
        (404, {}, (PermanentError, 404)),
    ],
)
def test_table_store_maps_http_statuses(canned_server, status, headers, expected):
    canned_server.status = status
    canned_server.headers_out = headers
    conn = connection_string(canned_server.port)
    store = TableStore.from_connection_string(conn, retry_total=0)
    with store, pytest.raises(expected[0]) as caught:
        store.list_anomalies(date(2026, 11, 27))
    error = caught.value
    assert type(error) is expected[0]
    got = error.retry_after if isinstance(error, TransientError) else error.status
    assert got == expected[1]
    assert error.__cause__ is not None


def test_run_azurite_without_node_modules_says_to_run_npm_install(monkeypatch, tmp_path):
    from tests.support import azurite

    monkeypatch.setattr(azurite, "AZURITE_BIN", tmp_path / "node_modules/.bin")
    with pytest.raises(azurite.AzuriteError, match=r"run `npm install` in "), azurite.run_azurite():
        pass


@pytest.mark.parametrize(
    ("metrics", "stored"),
    [
        ({"rpm": 1500.5, "temp_c": 40}, '{"rpm":1500.5,"temp_c":40}'),
        ({"tempé": 1.0}, '{"tempé":1.0}'),  # non-ASCII as it is: 1 UTF-16 unit, not 6
        ({"bad\ud800": 1.0}, '{"bad\\ud800":1.0}'),  # a lone surrogate travels escaped
        ({1: 2.0}, '{"1":2.0}'),  # a key that is not a string: as the json module writes it
    ],
)
def test_stored_metrics_are_compact_json(metrics, stored):
    from shared._entities import _json

    assert _json(metrics) == stored
    assert json.loads(_json(metrics)) == {str(k): v for k, v in metrics.items()}
