"""Dead letters for operators: list, show and replay over the in-memory twins, then Azurite."""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from azure.data.tables import TableServiceClient

import fleetscore.deadletters as core
from fleetscore.__main__ import Backends, CliSettings, main
from fleetscore.deadletters import (
    DeadLetterNotFound,
    InMemoryReplayLog,
    ReplayMark,
    TableReplayLog,
    days_between,
    get_letter,
    list_letters,
    replay_letters,
)
from shared.deadletters import DeadLetter
from shared.errors import TransientError
from shared.events import IncomingEvent, decode_event, encode_device_events
from shared.microbatch import MicroBatcher
from shared.pipeline import ScoringPipeline
from shared.publisher import InMemoryPublisher
from shared.readings import Reading
from shared.scoring import AmlClient
from shared.states import StateCache
from shared.store import InMemoryTableStore
from tests.support.aml_standin import KEY

DAY = date(2026, 11, 27)
T0 = datetime(2026, 11, 27, 6, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)


def readings(device: str, n: int) -> list[Reading]:
    return [
        Reading(device, T0 + timedelta(seconds=10 * i), {"rpm": 50.0 + i, "temperature_c": 60.0})
        for i in range(n)
    ]


def event_payload(device: str, n: int) -> str:
    [event] = encode_device_events({device: readings(device, n)}, ingested_at=T0)
    return event.body.decode()


def letter(
    payload: str,
    *,
    minutes: int,
    source: str = "model",
    reason: str = "model refused: 400",
    device: str | None = None,
    seq: int = 0,
) -> DeadLetter:
    return DeadLetter(
        payload=payload,
        reason=reason,
        source=source,
        occurred_at=T0 + timedelta(minutes=minutes),
        partition="0",
        offset=str(seq * 100),
        sequence_number=seq,
        device_id=device,
    )


@pytest.fixture
def store() -> InMemoryTableStore:
    """Three letters on DAY (two replayable, one poison event) and one the day before."""
    s = InMemoryTableStore()
    s.create_tables()
    s.add_dead_letters(
        [
            letter(event_payload("pump-1", 3), minutes=10, device="pump-1", seq=1),
            letter(
                event_payload("fan-2", 2),
                minutes=30,
                source="store",
                reason="table service refused the predictions",
                device="fan-2",
                seq=2,
            ),
            letter(
                "not json {",
                minutes=20,
                source="event",
                reason="undecodable event: body: not JSON",
                seq=3,
            ),
            letter(event_payload("pump-1", 1), minutes=-24 * 60, device="pump-1", seq=4),
        ]
    )
    return s


def ids(items: list[dict]) -> list[tuple[str, str]]:
    return [(i["date"], i["source"]) for i in items]


def test_days_between_is_inclusive_and_bounded() -> None:
    assert days_between(DAY - timedelta(days=2), DAY) == [
        date(2026, 11, 25),
        date(2026, 11, 26),
        DAY,
    ]
    with pytest.raises(ValueError, match="before"):
        days_between(DAY, DAY - timedelta(days=1))
    with pytest.raises(ValueError, match="at most 366"):
        days_between(DAY - timedelta(days=400), DAY)


def test_list_letters_newest_first_across_days_with_marks(store) -> None:
    items = list_letters(store, InMemoryReplayLog(), days_between(DAY - timedelta(days=1), DAY))
    assert [(i["date"], i["occurred_at"], i["source"]) for i in items] == [
        ("2026-11-27", "2026-11-27T06:30:00.000Z", "store"),
        ("2026-11-27", "2026-11-27T06:20:00.000Z", "event"),
        ("2026-11-27", "2026-11-27T06:10:00.000Z", "model"),
        ("2026-11-26", "2026-11-26T06:00:00.000Z", "model"),
    ]
    assert {(i["replayed_at"], i["replay_count"]) for i in items} == {(None, 0)}
    oldest = list_letters(
        store, InMemoryReplayLog(), [DAY - timedelta(days=1), DAY], newest_first=False, limit=2
    )
    assert [i["occurred_at"] for i in oldest] == [
        "2026-11-26T06:00:00.000Z",
        "2026-11-27T06:10:00.000Z",
    ]


def test_list_letters_filters_by_source_and_reason_substring(store) -> None:
    marks = InMemoryReplayLog()
    assert ids(list_letters(store, marks, [DAY], source="EVE")) == [("2026-11-27", "event")]
    assert ids(list_letters(store, marks, [DAY], reason="refused")) == [
        ("2026-11-27", "store"),
        ("2026-11-27", "model"),
    ]
    assert list_letters(store, marks, [DAY], source="model", reason="table") == []
    with pytest.raises(ValueError, match="at least 1"):
        list_letters(store, marks, [DAY], limit=0)


def test_list_letters_pages_through_the_store(store, monkeypatch) -> None:
    calls = []
    real = store.list_dead_letters

    def counting(day, *, limit=100, after=None):
        calls.append(after)
        return real(day, limit=limit, after=after)

    monkeypatch.setattr(core, "_PAGE", 2)
    monkeypatch.setattr(store, "list_dead_letters", counting)
    assert len(list_letters(store, InMemoryReplayLog(), [DAY])) == 3
    assert len(calls) == 2
    assert calls[0] is None
    assert calls[1] is not None


def test_get_letter_returns_payload_and_raises_for_unknown_id(store) -> None:
    [item] = list_letters(store, InMemoryReplayLog(), [DAY], source="store")
    shown = get_letter(store, InMemoryReplayLog(), DAY, item["id"])
    assert decode_event(shown["payload"].encode()) == ("fan-2", readings("fan-2", 2))
    assert (shown["device_id"], shown["reason"]) == (
        "fan-2",
        "table service refused the predictions",
    )
    with pytest.raises(DeadLetterNotFound, match="2026-11-26"):
        get_letter(store, InMemoryReplayLog(), DAY - timedelta(days=1), item["id"])


def test_replay_publishes_readings_marks_letters_and_reports_the_poison(store) -> None:
    marks, hub = InMemoryReplayLog(), InMemoryPublisher()
    out = replay_letters(store, marks, hub, [DAY], now=NOW)
    assert [(o.status, o.device_id, o.readings, o.events) for o in out] == [
        ("replayed", "pump-1", 3, 1),
        ("invalid", None, 0, 0),
        ("replayed", "fan-2", 2, 1),
    ]
    assert out[1].reason.startswith("payload still invalid: body: not JSON")
    assert [decode_event(e.body) for e in hub.events] == [
        ("pump-1", readings("pump-1", 3)),
        ("fan-2", readings("fan-2", 2)),
    ]
    assert [(e.partition_key, e.properties["count"]) for e in hub.events] == [
        ("pump-1", 3),
        ("fan-2", 2),
    ]
    listed = {i["source"]: i for i in list_letters(store, marks, [DAY])}
    assert {s: (i["replay_count"], i["replayed_at"]) for s, i in listed.items()} == {
        "model": (1, "2026-11-27T09:00:00.000Z"),
        "store": (1, "2026-11-27T09:00:00.000Z"),
        "event": (0, None),  # left in place, unmarked
    }
    assert len(list_letters(store, marks, [DAY])) == 3  # letters are kept, not deleted


def test_replay_twice_is_a_no_op_unless_forced(store) -> None:
    marks, hub = InMemoryReplayLog(), InMemoryPublisher()
    replay_letters(store, marks, hub, [DAY], now=NOW, source="model")
    again = replay_letters(store, marks, hub, [DAY], now=LATER, source="model")
    assert [(o.status, o.reason) for o in again] == [
        ("skipped", "already replayed at 2026-11-27T09:00:00.000Z; --force replays it again")
    ]
    assert len(hub.events) == 1
    forced = replay_letters(store, marks, hub, [DAY], now=LATER, source="model", force=True)
    assert [o.status for o in forced] == ["replayed"]
    assert len(hub.events) == 2
    assert hub.events[0].body == hub.events[1].body
    assert [e.properties["ingested_at"] for e in hub.events] == [
        "2026-11-27T09:00:00.000Z",
        "2026-11-27T10:00:00.000Z",
    ]
    [item] = list_letters(store, marks, [DAY], source="model")
    assert (item["replay_count"], item["replayed_at"]) == (2, "2026-11-27T10:00:00.000Z")


def test_replay_by_id_reports_unknown_ids(store) -> None:
    marks, hub = InMemoryReplayLog(), InMemoryPublisher()
    [item] = list_letters(store, marks, [DAY], source="store")
    out = replay_letters(store, marks, hub, [DAY], now=NOW, ids=[item["id"], "f" * 32, item["id"]])
    assert [(o.id, o.status) for o in out] == [(item["id"], "replayed"), ("f" * 32, "not_found")]
    assert out[1].reason == "no dead letter with this id in 2026-11-27..2026-11-27"
    assert [decode_event(e.body)[0] for e in hub.events] == ["fan-2"]


def test_replay_dry_run_changes_nothing(store) -> None:
    marks, hub = InMemoryReplayLog(), InMemoryPublisher()
    out = replay_letters(store, marks, hub, [DAY], now=NOW, dry_run=True)
    assert [o.status for o in out] == ["would_replay", "invalid", "would_replay"]
    assert hub.events == []
    assert marks.marks == {}


def test_replay_a_hub_failure_leaves_the_letter_unmarked(store) -> None:
    marks, hub = InMemoryReplayLog(), InMemoryPublisher()
    hub.fail_with = TransientError("Event Hubs unreachable: ConnectError")
    out = replay_letters(store, marks, hub, [DAY], now=NOW, source="model")
    assert [(o.status, o.reason) for o in out] == [
        ("failed", "Event Hubs unreachable: ConnectError")
    ]
    assert marks.marks == {}


def test_replay_a_truncated_payload_is_invalid() -> None:
    s = InMemoryTableStore()
    s.add_dead_letters([letter("x" * 1_200_000, minutes=0, source="event")])
    [out] = replay_letters(s, InMemoryReplayLog(), InMemoryPublisher(), [DAY], now=NOW)
    assert (out.status, out.reason) == (
        "invalid",
        "payload was truncated when stored (1200000 bytes)",
    )


# --- the CLI -------------------------------------------------------------------------------


@pytest.fixture
def settings_file(tmp_path: Path) -> Path:
    """An empty settings file, so the demo's own file cannot fill anything in."""
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"Values": {}}))
    return path


ENV = {"TABLES_CONNECTION": "UseDevelopmentStorage=true", "EVENTHUB_CONNECTION": "Endpoint=sb://x"}


def run_cli(args, store, marks, hub, settings_file, env=ENV) -> tuple[int, list[CliSettings]]:
    seen: list[CliSettings] = []

    def backends(settings: CliSettings) -> Backends:
        seen.append(settings)
        return Backends(store, marks, lambda: hub)

    argv = ["deadletters", *args, "--settings", str(settings_file)]
    return main(argv, env=env, backends=backends, now=NOW), seen


def test_cli_list_prints_a_table_or_json_lines(store, settings_file, capsys) -> None:
    rc, [settings] = run_cli(
        ["list", "--date", "2026-11-27"], store, InMemoryReplayLog(), None, settings_file
    )
    out = capsys.readouterr()
    assert rc == 0
    lines = out.out.splitlines()
    assert lines[0].split() == [
        "DATE",
        "OCCURRED_AT",
        "ID",
        "SOURCE",
        "DEVICE",
        "REPLAYED",
        "REASON",
    ]
    assert [line.split()[3] for line in lines[1:]] == ["store", "event", "model"]
    assert out.err == "3 dead letters\n"
    assert (settings.eventhub_name, settings.table_prefix) == ("readings", "")
    rc, _ = run_cli(
        [
            "list",
            "--from",
            "2026-11-26",
            "--to",
            "2026-11-27",
            "--source",
            "model",
            "--json",
            "--oldest-first",
        ],
        store,
        InMemoryReplayLog(),
        None,
        settings_file,
    )
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["date"], r["device_id"], r["payload_chars"] > 0) for r in rows] == [
        ("2026-11-26", "pump-1", True),
        ("2026-11-27", "pump-1", True),
    ]
    assert all("payload" not in r for r in rows)


def test_cli_show_prints_the_full_letter(store, settings_file, capsys) -> None:
    [item] = list_letters(store, InMemoryReplayLog(), [DAY], source="event")
    rc, _ = run_cli(
        ["show", item["id"], "--date", "2026-11-27"],
        store,
        InMemoryReplayLog(),
        None,
        settings_file,
    )
    shown = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert shown["payload"] == "not json {"
    assert shown["sequence_number"] == 3
    rc, _ = run_cli(
        ["show", "a" * 32, "--date", "2026-11-27"], store, InMemoryReplayLog(), None, settings_file
    )
    assert rc == 1
    assert "no dead letter" in capsys.readouterr().err


def test_cli_replay_dry_run_then_replay_then_skip(store, settings_file, capsys) -> None:
    marks, hub = InMemoryReplayLog(), InMemoryPublisher()
    rc, _ = run_cli(
        ["replay", "--all", "--source", "model", "--dry-run"], store, marks, hub, settings_file
    )
    out = capsys.readouterr()
    assert (rc, hub.events, out.err) == (0, [], "dry run: 2 would_replay\n")
    rc, _ = run_cli(
        ["replay", "--all", "--date", "2026-11-27", "--json"], store, marks, hub, settings_file
    )
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rc == 1  # the poison event is still invalid
    assert [(r["status"], r["device_id"]) for r in rows] == [
        ("replayed", "pump-1"),
        ("invalid", None),
        ("replayed", "fan-2"),
    ]
    rc, _ = run_cli(
        ["replay", "--all", "--date", "2026-11-27", "--source", "model"],
        store,
        marks,
        hub,
        settings_file,
    )
    out = capsys.readouterr()
    assert rc == 0
    assert out.out.startswith("skipped")
    assert out.err == "1 skipped\n"
    assert len(hub.events) == 2


def test_cli_bad_usage_exits_2(store, settings_file, capsys) -> None:
    rc, seen = run_cli(
        ["list", "--date", "2026-11-27", "--from", "2026-11-20"],
        store,
        InMemoryReplayLog(),
        None,
        settings_file,
    )
    assert (rc, seen) == (2, [])
    assert "not both" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["deadletters", "replay", "--date", "2026-11-27"])  # neither --id nor --all
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        main(["deadletters", "list", "--date", "27/11/2026"])
    assert "not a date YYYY-MM-DD" in capsys.readouterr().err


def test_cli_names_the_missing_setting(settings_file, capsys) -> None:
    rc = main(["deadletters", "list", "--settings", str(settings_file)], env={}, now=NOW)
    err = capsys.readouterr().err
    assert rc == 1
    assert err.startswith("error: TABLES_CONNECTION: is required (or AzureWebJobsStorage)")
    env = {
        "TABLES_CONNECTION": "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        "AccountKey=c2VjcmV0LWtleQ==;TableEndpoint=http://127.0.0.1:9/devstoreaccount1;"
    }
    rc = main(
        ["deadletters", "replay", "--all", "--settings", str(settings_file)], env=env, now=NOW
    )
    err = capsys.readouterr().err
    assert rc == 1
    assert err.startswith("error: EVENTHUB_CONNECTION: is required to replay")
    assert "c2VjcmV0LWtleQ" not in err


def test_cli_settings_file_fills_what_the_environment_lacks(store, tmp_path, capsys) -> None:
    path = tmp_path / "s.json"
    path.write_text(
        json.dumps(
            {
                "Values": {
                    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
                    "TABLE_PREFIX": "file",
                    "EVENTHUB_NAME": "hub",
                }
            }
        )
    )
    rc, [settings] = run_cli(
        ["list"], store, InMemoryReplayLog(), None, path, env={"TABLE_PREFIX": "env"}
    )
    assert rc == 0
    assert (settings.tables_connection, settings.table_prefix, settings.eventhub_name) == (
        "UseDevelopmentStorage=true",
        "env",
        "hub",
    )


def test_cli_query_is_unchanged(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["query", "--help"])
    assert exc.value.code == 0
    assert "devices" in capsys.readouterr().out


# --- Azurite -------------------------------------------------------------------------------


@pytest.fixture
def replay_log(table_store, azurite_tables):
    log = TableReplayLog.from_connection_string(
        azurite_tables, table_prefix=table_store.table_prefix
    )
    yield log
    log.close()
    with TableServiceClient.from_connection_string(azurite_tables) as service:
        service.delete_table(log.table_name)


@pytest.mark.azurite
def test_table_replay_log_keeps_marks_by_day(replay_log) -> None:
    assert replay_log.get_marks(DAY) == {}  # before the table exists
    replay_log.upsert_mark(DAY, "a" * 32, ReplayMark("2026-11-27T09:00:00.000Z", 1, 1))
    replay_log.upsert_mark(DAY, "a" * 32, ReplayMark("2026-11-27T10:00:00.000Z", 2, 3))
    replay_log.upsert_mark(DAY - timedelta(days=1), "b" * 32, ReplayMark("x", 1, 1))
    assert replay_log.get_marks(DAY) == {"a" * 32: ReplayMark("2026-11-27T10:00:00.000Z", 2, 3)}


@pytest.mark.azurite
def test_refused_device_is_dead_lettered_replayed_after_the_fix_and_stored_once(
    aml, table_store, replay_log
) -> None:
    batcher = MicroBatcher(
        AmlClient(aml.url, KEY), sleep=lambda s: None, rng=random.Random(0), retry_deadline=5
    )
    pipeline = ScoringPipeline(store=table_store, batcher=batcher, states=StateCache(table_store))
    window = {"start": T0 - timedelta(days=1), "end": NOW, "limit": 100}

    def deliver(bodies: list[bytes], first_seq: int) -> None:
        events = [
            IncomingEvent(
                b,
                partition="1",
                offset=str(first_seq + i),
                sequence_number=first_seq + i,
                enqueued_time=NOW,
            )
            for i, b in enumerate(bodies)
        ]
        pipeline.process(events, now=NOW)

    try:
        aml.script.poison_devices = {"bad-7"}
        groups = {"ok-1": readings("ok-1", 2), "bad-7": readings("bad-7", 3)}
        deliver([e.body for e in encode_device_events(groups, ingested_at=NOW)], 0)
        assert table_store.list_predictions("bad-7", **window).items == []
        [dead] = list_letters(table_store, replay_log, [DAY])
        assert (dead["source"], dead["device_id"], dead["replay_count"]) == ("model", "bad-7", 0)

        aml.script.poison_devices = set()  # the fix
        hub = InMemoryPublisher()
        [out] = replay_letters(table_store, replay_log, hub, [DAY], now=NOW)
        assert (out.status, out.readings) == ("replayed", 3)
        deliver([e.body for e in hub.events], 10)  # the hub hands them to the score function
        # A second replay is skipped; a forced one is delivered again and still stores once.
        assert [o.status for o in replay_letters(table_store, replay_log, hub, [DAY], now=NOW)] == [
            "skipped"
        ]
        replay_letters(table_store, replay_log, hub, [DAY], now=LATER, force=True)
        deliver([hub.events[-1].body], 20)
    finally:
        batcher.close()
        batcher.scorer.close()

    stored = table_store.list_predictions("bad-7", **window).items
    assert [p["timestamp"] for p in stored] == [
        "2026-11-27T06:00:00.000Z",
        "2026-11-27T06:00:10.000Z",
        "2026-11-27T06:00:20.000Z",
    ]
    assert len(table_store.list_predictions("ok-1", **window).items) == 2
    [dead] = list_letters(table_store, replay_log, [DAY])  # kept, marked twice, nothing new
    assert (dead["device_id"], dead["replay_count"]) == ("bad-7", 2)
