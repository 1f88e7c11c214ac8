"""The score function called the documented way: a list of EventHubEvent into main()."""

from __future__ import annotations

import logging
import random
from datetime import UTC, datetime, timedelta

import pytest

import score_function
from shared.errors import TransientError
from shared.events import encode_device_events
from shared.microbatch import MicroBatcher
from shared.pipeline import ScoringPipeline
from shared.readings import Reading
from shared.scoring import AmlClient
from shared.store import InMemoryTableStore
from shared.wiring import ScoreApp
from tests.support.aml_standin import KEY
from tests.support.functions import eventhub_batch

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def store(aml, monkeypatch):
    tables = InMemoryTableStore()
    t = [0.0]
    batcher = MicroBatcher(
        AmlClient(aml.url, KEY),
        retry_deadline=3,
        clock=lambda: t[0],
        sleep=lambda s: t.__setitem__(0, t[0] + s),
        rng=random.Random(0),
    )
    monkeypatch.setattr(
        score_function, "_app", ScoreApp(ScoringPipeline(store=tables, batcher=batcher))
    )
    yield tables
    batcher.close()
    batcher.scorer.close()


def bodies(device: str, n: int) -> list[bytes]:
    rs = [
        Reading(device, NOW - timedelta(minutes=10) + timedelta(seconds=i), {"rpm": 10.0})
        for i in range(n)
    ]
    return [e.body for e in encode_device_events({device: rs}, ingested_at=NOW)]


def window() -> dict:
    return {"start": NOW - timedelta(hours=1), "end": NOW + timedelta(hours=1), "limit": 100}


def test_score_function_stores_predictions(store):
    events = eventhub_batch(
        bodies("a", 3) + bodies("b", 2), partition="5", enqueued=NOW, partition_keys=["a", "b"]
    )
    assert score_function.main(events) is None
    assert len(store.list_predictions("a", **window()).items) == 3
    assert len(store.list_predictions("b", **window()).items) == 2


def test_score_function_dead_letters_poison_with_its_coordinates(store):
    events = eventhub_batch(
        [b"garbage", *bodies("a", 1)], partition="5", first_sequence=41, enqueued=NOW
    )
    score_function.main(events)
    [letter] = store.list_dead_letters(NOW.date(), limit=10).items
    assert (letter["partition"], letter["sequence_number"], letter["offset"]) == (
        "5",
        41,
        str(4096 * 41),
    )
    assert len(store.list_predictions("a", **window()).items) == 1


def test_score_function_raises_so_the_retry_policy_redelivers(store, aml, caplog):
    aml.script.faults += [(503, {}, b"")] * 1000
    events = eventhub_batch(bodies("a", 2), partition="1", first_sequence=7, enqueued=NOW)
    with pytest.raises(TransientError, match="gave up"):
        score_function.main(events)
    assert (
        "batch of 1 events (partition 1, first sequence 7) failed; it will be redelivered"
        in caplog.text
    )
    assert store.list_predictions("a", **window()).items == []


class Context:
    """What the worker passes as `context` (only the invocation id is read)."""

    invocation_id = "5f0c1f4e-0000-4000-8000-000000000001"


def test_score_function_tags_its_log_records_with_the_invocation_id(store, caplog):
    caplog.set_level(logging.INFO)
    events = eventhub_batch(bodies("a", 2), partition="2", enqueued=NOW)
    score_function.main(events, context=Context())
    [line] = [r for r in caplog.records if r.getMessage().startswith("scored 2 readings")]
    assert line.invocation_id == Context.invocation_id
    assert line.__dict__["fleetscore.predictions"] == 2


def test_score_function_without_a_context_makes_up_an_id_per_invocation(store, caplog):
    caplog.set_level(logging.INFO)
    score_function.main(eventhub_batch(bodies("a", 1), partition="2", enqueued=NOW))
    score_function.main(eventhub_batch(bodies("b", 1), partition="2", enqueued=NOW))
    ids = [r.invocation_id for r in caplog.records if r.getMessage().startswith("scored 1 ")]
    assert len(ids) == 2
    assert len(set(ids)) == 2
    assert all(ids)
