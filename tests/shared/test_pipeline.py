"""The scoring pipeline end to end over the AML stand-in (HTTP) and the table store."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from shared.errors import TransientError
from shared.events import IncomingEvent, decode_event, encode_device_events
from shared.microbatch import MicroBatcher
from shared.pipeline import ScoringPipeline
from shared.readings import Reading
from shared.scoring import AmlClient
from shared.states import StateCache, Written
from shared.store import InMemoryTableStore
from tests.support.aml_standin import KEY

T0 = datetime(2026, 11, 27, 6, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
WINDOW = {"start": T0 - timedelta(days=1), "end": NOW + timedelta(days=1), "limit": 1000}


def readings(device: str, n: int, start: int = 0, hot: set[int] = frozenset()) -> list[Reading]:
    return [
        Reading(
            device,
            T0 + timedelta(seconds=10 * i),
            {"rpm": 500.0 if i in hot else 50.0, "temperature_c": 60.0},
        )
        for i in range(start, start + n)
    ]


def events_for(groups: dict[str, list[Reading]], first_sequence: int = 0) -> list[IncomingEvent]:
    out = encode_device_events(groups, ingested_at=NOW)
    return [
        IncomingEvent(
            e.body,
            partition="3",
            offset=str(4096 * (first_sequence + i)),
            sequence_number=first_sequence + i,
            enqueued_time=NOW,
        )
        for i, e in enumerate(out)
    ]


class Sleepless:
    def __init__(self) -> None:
        self.t = 0.0

    def clock(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


@pytest.fixture(params=["memory", pytest.param("azurite", marks=pytest.mark.azurite)])
def store(request):
    if request.param == "memory":
        return InMemoryTableStore()
    return request.getfixturevalue("table_store")


@pytest.fixture
def make_pipeline(aml, store):
    made = []

    def make(**kwargs) -> ScoringPipeline:
        fake = Sleepless()
        batcher = MicroBatcher(
            AmlClient(aml.url, KEY),
            clock=fake.clock,
            sleep=fake.sleep,
            rng=random.Random(0),
            retry_deadline=kwargs.pop("retry_deadline", 60.0),
            max_rows=kwargs.pop("max_rows", 2000),
        )
        made.append(batcher)
        return ScoringPipeline(
            store=store, batcher=batcher, states=StateCache(store, ttl=300), **kwargs
        )

    yield make
    for b in made:
        b.close()
        b.scorer.close()


class WritesWithout:
    """The store, but one device's writes never reach it: `answer` says what became of them."""

    def __init__(self, inner, device: str, answer: Callable[[Written], Written]) -> None:
        self.inner, self.device, self.answer = inner, device, answer

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def write_devices(self, writes, **kwargs) -> Written:
        done = self.inner.write_devices([w for w in writes if w.device_id != self.device], **kwargs)
        return self.answer(done) if any(w.device_id == self.device for w in writes) else done


def stored(store, device: str) -> list[dict]:
    return store.list_predictions(device, **WINDOW).items


def test_pipeline_stores_one_prediction_per_reading_and_indexes_anomalies(make_pipeline, store):
    report = make_pipeline().process(
        events_for({"a": readings("a", 5, hot={2}), "b": readings("b", 3)}), now=NOW
    )
    assert (
        report.events,
        report.readings,
        report.devices,
        report.predictions,
        report.anomalies,
        report.dead_letters,
    ) == (2, 8, 2, 8, 1, 0)
    rows = stored(store, "a")
    assert [r["timestamp"] for r in rows] == [
        f"2026-11-27T06:00:{10 * i:02d}.000Z" for i in range(5)
    ]
    assert rows[2]["is_anomaly"] is True
    assert rows[2]["top_metric"] == "rpm"
    assert rows[2]["metrics"] == {"rpm": 500.0, "temperature_c": 60.0}
    anomalies = store.list_anomalies(T0.date(), limit=100).items
    assert [(a["device_id"], a["timestamp"]) for a in anomalies] == [
        ("a", "2026-11-27T06:00:20.000Z")
    ]
    assert store.get_states(["a", "b"]) == {"a": {"seen": 5}, "b": {"seen": 3}}


def test_pipeline_redelivery_leaves_one_row_per_reading(make_pipeline, store):
    batch = events_for({"a": readings("a", 4), "b": readings("b", 4, hot={1})})
    pipeline = make_pipeline()
    pipeline.process(batch, now=NOW)
    pipeline.process(batch, now=NOW)  # the same events again, as Event Hubs may deliver them
    make_pipeline().process(batch, now=NOW)  # and again on another worker with a cold cache
    assert len(stored(store, "a")) == 4
    assert len(stored(store, "b")) == 4
    assert len(store.list_anomalies(T0.date(), limit=100).items) == 1


def test_pipeline_dead_letters_poison_events_and_keeps_the_rest(make_pipeline, store):
    good = events_for({"a": readings("a", 3)}, first_sequence=10)
    poison = [
        IncomingEvent(
            b"\xff not json", partition="3", offset="999", sequence_number=7, enqueued_time=NOW
        ),
        IncomingEvent(
            b'{"schema": 9, "device_id": "a", "readings": []}',
            partition="3",
            offset="1000",
            sequence_number=8,
            enqueued_time=NOW,
        ),
    ]
    report = make_pipeline().process([poison[0], *good, poison[1]], now=NOW)
    assert (report.predictions, report.dead_letters) == (3, 2)
    letters = store.list_dead_letters(NOW.date(), limit=10).items
    by_seq = {letter["sequence_number"]: letter for letter in letters}
    assert sorted(by_seq) == [7, 8]
    assert by_seq[7]["source"] == "event"
    assert by_seq[7]["partition"] == "3"
    assert by_seq[7]["offset"] == "999"
    assert by_seq[7]["reason"].startswith("undecodable event: body: not JSON")
    assert by_seq[8]["reason"] == "undecodable event: schema: unsupported schema 9; expected 1"
    assert by_seq[7]["payload"] == "\\xff not json"


def test_pipeline_dead_letters_a_refused_device_as_a_replayable_event(aml, make_pipeline, store):
    aml.script.poison_devices = {"bad"}
    report = make_pipeline().process(
        events_for({"a": readings("a", 2), "bad": readings("bad", 2), "c": readings("c", 2)}),
        now=NOW,
    )
    assert (report.predictions, report.dead_letters) == (4, 1)
    [letter] = store.list_dead_letters(NOW.date(), limit=10).items
    assert (letter["source"], letter["device_id"], letter["partition"]) == ("model", "bad", "3")
    assert letter["reason"].startswith("model refused: AML refused the request (400)")
    assert decode_event(letter["payload"].encode()) == ("bad", readings("bad", 2))
    assert stored(store, "bad") == []
    assert store.get_states(["bad"]) == {"bad": None}


def test_pipeline_aml_down_past_deadline_raises_and_writes_nothing(aml, make_pipeline, store):
    aml.script.faults += [(503, {}, b"")] * 1000
    batch = events_for({"a": readings("a", 3)})
    with pytest.raises(TransientError):
        make_pipeline(retry_deadline=5).process(batch, now=NOW)
    assert stored(store, "a") == []
    assert store.get_states(["a"]) == {"a": None}
    aml.script.faults.clear()
    make_pipeline().process(batch, now=NOW)  # the redelivery after AML recovers
    assert len(stored(store, "a")) == 3


def test_pipeline_carries_state_across_batches_in_time_order(aml, make_pipeline, store):
    pipeline = make_pipeline()
    late_first = events_for(
        {"a": readings("a", 3, start=3) + readings("a", 3)}
    )  # out of order inside
    pipeline.process(late_first, now=NOW)
    assert aml.record.requests[0]["devices"][0]["timestamps"] == [
        f"2026-11-27T06:00:{10 * i:02d}.000Z" for i in range(6)
    ]
    pipeline.process(events_for({"a": readings("a", 2, start=6)}), now=NOW)
    assert aml.record.requests[1]["devices"][0]["state"] == {"seen": 6}
    assert store.get_states(["a"]) == {"a": {"seen": 8}}


def test_pipeline_sinks_see_predictions_and_a_failing_sink_changes_nothing(
    make_pipeline, store, caplog
):
    seen = []

    class Recorder:
        def offer(self, predictions):
            seen.extend(predictions)

    class Broken:
        def offer(self, predictions):
            raise RuntimeError("sink bug")

    report = make_pipeline(sinks=[Broken(), Recorder()]).process(
        events_for({"a": readings("a", 2)}), now=NOW
    )
    assert report.predictions == 2
    assert [p.device_id for p in seen] == ["a", "a"]
    assert "sink Broken failed" in caplog.text
    assert len(stored(store, "a")) == 2


def test_pipeline_dead_letter_payload_is_json_event(make_pipeline, store, aml):
    aml.script.poison_devices = {"bad"}
    make_pipeline().process(events_for({"bad": readings("bad", 1)}), now=NOW)
    [letter] = store.list_dead_letters(NOW.date(), limit=10).items
    assert json.loads(letter["payload"])["schema"] == 1


def test_pipeline_a_row_the_table_refuses_is_dead_lettered_not_retried_forever(
    aml, make_pipeline, store
):
    def model(req):
        from tests.support.aml_standin import toy_model

        out = toy_model(req)
        for d in out["devices"]:
            if d["device_id"] == "wide":
                for p in d["predictions"]:
                    p["note"] = "x" * 1000
                    p["top_metric"] = "t" * 1024
        return out

    aml.script.model = model

    refused = "table service refused the predictions: PropertyValueTooLarge"
    picky = WritesWithout(  # the real store's refusal, for one device: as for a bad entity
        store, "wide", lambda done: Written(done.etags, done.conflicts, {"wide": refused})
    )

    pipeline = make_pipeline()
    pipeline.store = picky
    report = pipeline.process(
        events_for({"ok": readings("ok", 2), "wide": readings("wide", 3)}), now=NOW
    )
    assert (report.predictions, report.dead_letters) == (2, 1)
    [letter] = store.list_dead_letters(NOW.date(), limit=10).items
    assert (letter["source"], letter["device_id"]) == ("store", "wide")
    assert letter["reason"].startswith("table service refused the predictions")
    assert len(decode_event(letter["payload"].encode())[1]) == 3
    assert store.get_states(["ok", "wide"]) == {"ok": {"seen": 2}, "wide": None}


def test_pipeline_a_state_changed_by_another_worker_is_read_again(aml, make_pipeline, store):
    first, second = make_pipeline(), make_pipeline()
    first.process(events_for({"a": readings("a", 1)}), now=NOW)  # first caches {"seen": 1}
    second.process(events_for({"a": readings("a", 1, start=1)}), now=NOW)  # the partition moved
    first.process(events_for({"a": readings("a", 1, start=2)}), now=NOW)  # and came back
    assert store.get_states(["a"]) == {"a": {"seen": 3}}
    states_sent = [req["devices"][0]["state"] for req in aml.record.requests]
    assert states_sent == [
        None,
        {"seen": 1},
        {"seen": 1},
        {"seen": 2},
    ]  # the stale try, then the stored one


def test_pipeline_model_rejections_dead_letter_one_row_per_origin_event(aml, make_pipeline, store):
    aml.script.poison_devices = {"bad"}
    batch = events_for({"bad": readings("bad", 2)}, first_sequence=5) + events_for(
        {"bad": readings("bad", 2, start=2)}, first_sequence=6
    )
    make_pipeline().process(batch, now=NOW)
    make_pipeline().process(batch[1:], now=NOW)  # redelivered with other batch boundaries
    letters = store.list_dead_letters(NOW.date(), limit=10).items
    assert sorted(
        (x["sequence_number"], len(decode_event(x["payload"].encode())[1])) for x in letters
    ) == [(5, 2), (6, 2)]


def test_pipeline_scores_again_only_the_devices_whose_state_changed(aml, make_pipeline, store):
    first, second = make_pipeline(), make_pipeline()
    first.process(events_for({"a": readings("a", 1), "b": readings("b", 1)}), now=NOW)
    second.process(events_for({"a": readings("a", 1, start=1)}), now=NOW)  # "a" moved away
    aml.record.requests.clear()
    report = first.process(
        events_for({"a": readings("a", 1, start=2), "b": readings("b", 1, start=1)}), now=NOW
    )
    sent = [[(d["device_id"], d["state"]) for d in req["devices"]] for req in aml.record.requests]
    assert sent == [[("a", {"seen": 1}), ("b", {"seen": 1})], [("a", {"seen": 2})]]
    assert (report.predictions, report.requests) == (2, 2)
    assert store.get_states(["a", "b"]) == {"a": {"seen": 3}, "b": {"seen": 2}}
    assert len(stored(store, "a")) == 3


def test_pipeline_a_transient_write_failure_raises_and_keeps_what_landed(aml, make_pipeline, store):
    half_down = WritesWithout(
        store, "b", lambda done: Written(done.etags, [], {}, TransientError("table answered 503"))
    )
    pipeline = make_pipeline()
    pipeline.store = half_down
    with pytest.raises(TransientError):
        pipeline.process(events_for({"a": readings("a", 2), "b": readings("b", 2)}), now=NOW)
    assert store.get_states(["a", "b"]) == {"a": {"seen": 2}, "b": None}
    pipeline.store = store  # the service is back; the batch comes again
    aml.record.requests.clear()
    pipeline.process(events_for({"a": readings("a", 2), "b": readings("b", 2)}), now=NOW)
    # "a" landed and its cached state is the one stored, so the redelivery writes over it
    # without a conflict round; "b" starts where it was. The model keeps no per-reading
    # record, so "a"'s redelivered readings count twice in its state (as they did before
    # states rode with predictions); their prediction rows are overwritten, never doubled.
    assert [[d["state"] for d in req["devices"]] for req in aml.record.requests] == [
        [{"seen": 2}, None]
    ]
    assert store.get_states(["a", "b"]) == {"a": {"seen": 4}, "b": {"seen": 2}}
