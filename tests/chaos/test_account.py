"""The chaos run's books and verdict, on made-up data: each broken promise must show."""

from __future__ import annotations

from datetime import UTC, datetime

from local.chaos.account import Phase, chaos_line, settle
from local.chaos.poison import PoisonSent, poison_verdict
from local.chaos.report import ChaosReport
from local.demo.summary import PredictionRow
from shared.readings import format_timestamp, row_key

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _key(device: str, second: int) -> tuple[str, str]:
    return device, row_key(T0.replace(second=second))


def _row(device: str, second: int, *, written: float = 0.0) -> PredictionRow:
    stamp = T0.replace(second=second)
    return PredictionRow(device, row_key(stamp), format_timestamp(stamp), written, False)


def _phases() -> list[Phase]:
    return [Phase("baseline", 100.0, 200.0), Phase("kill", 200.0, 300.0), Phase("drain", 300.0)]


def test_settle_books_each_reading_to_the_phase_its_202_arrived_in():
    accepted = {_key("pump-1", 1): 150.0, _key("pump-1", 2): 250.0, _key("pump-2", 3): 299.0}
    rows = [_row("pump-1", 1), _row("pump-1", 2), _row("pump-2", 3)]
    account = settle(_phases(), accepted, rows, [])
    assert [(a.name, a.accepted, a.stored) for a in account.phases] == [
        ("baseline", 1, 1),
        ("kill", 2, 2),
        ("drain", 0, 0),
    ]
    assert account.ok


def test_settle_counts_missing_duplicated_and_unexpected_rows():
    accepted = {_key("pump-1", 1): 150.0, _key("pump-1", 2): 250.0}
    second_key = PredictionRow(  # the same reading stored again under another RowKey
        "pump-1", "other-key", format_timestamp(T0.replace(second=1)), 0.0, False
    )
    rows = [_row("pump-1", 1), second_key, _row("pump-9", 9)]
    account = settle(_phases(), accepted, rows, [])
    assert account.missing == 1
    assert account.missing_sample == [_key("pump-1", 2)]
    assert account.phases[1].missing == 1
    assert account.duplicated == 1
    assert account.unexpected == 1  # pump-9 was never accepted
    assert not account.ok


def test_a_reading_accepted_in_the_gap_between_two_phases_goes_to_the_earlier_one():
    phases = [Phase("a", 100.0, 200.0), Phase("b", 200.5, 300.0)]
    account = settle(phases, {_key("pump-1", 1): 200.2}, [_row("pump-1", 1)], [])
    assert [p.accepted for p in account.phases] == [1, 0]


def test_dead_letters_count_in_the_phase_their_data_entered_the_hub():
    phases = [Phase("a", T0.timestamp() - 10, T0.timestamp()), Phase("poison", T0.timestamp())]
    letter = {"reason": "undecodable event: body: not JSON", "occurred_at": T0.isoformat()}
    account = settle(phases, {}, [], [letter])
    assert [p.dead_lettered for p in account.phases] == [0, 1]
    assert account.dead_letter_reasons == {"undecodable event": 1}


def _sent() -> PoisonSent:
    neighbours = frozenset({_key("chaos-ok-1", 1)})
    return PoisonSent("0", ("not JSON", "huge event"), neighbours, T0)


def test_poison_verdict_ties_each_letter_to_its_partition_and_finds_strays():
    letters = [
        {
            "reason": "undecodable event: body: not JSON",
            "source": "event",
            "partition": "0",
            "payload": "\x00\\xff{this",
        },
        {
            "reason": "undecodable event: readings[0].metrics.temperature: must be a finite number",
            "source": "event",
            "partition": "0",
            "payload_truncated": True,
        },
    ]
    stored = {_key("chaos-ok-1", 1), _key("chaos-huge", 5)}
    verdict = poison_verdict(_sent(), letters, stored)
    assert verdict["dead_lettered"] == {"not JSON": True, "huge event": True}
    assert verdict["strays"] == [f"chaos-huge/{_key('chaos-huge', 5)[1]}"]
    assert not verdict["ok"]
    elsewhere = [{**letter, "partition": "3"} for letter in letters]
    assert poison_verdict(_sent(), elsewhere, set())["dead_lettered"] == {
        "not JSON": False,
        "huge event": False,
    }


def _report(**changes) -> ChaosReport:
    account = settle(_phases(), {_key("pump-1", 1): 150.0}, [_row("pump-1", 1)], [{}, {}])
    poison = {"dead_lettered": {"a": True, "b": True}, "neighbours": 1, "neighbours_stored": 1}
    fields = {
        "account": account,
        "phases": _phases(),
        "poison": poison,
        "drained": True,
        "seconds": 1.0,
        "sender": {"failed": 0},
        "proxy": {},
    }
    return ChaosReport(**{**fields, **changes})


def test_a_clean_report_has_no_problems():
    assert _report().problems() == []
    assert _report().ok


def test_every_failed_note_and_broken_promise_is_a_problem():
    phases = _phases()
    phases[0].notes.update(mid_batch=False, caught_up=False)
    phases[1].notes.update(
        backlog=10, down_answers=0, accepted_while_down=0, ingest_gave_up_while_down=3
    )
    report = _report(
        phases=phases,
        drained=False,
        sender={"failed": 2},
        poison={
            "dead_lettered": {"a": False},
            "neighbours": 2,
            "neighbours_stored": 1,
            "strays": ["chaos-huge/x"],
        },
    )
    text = "\n".join(report.problems())
    for expected in (
        "did not land in the middle of an invocation",
        "did not catch up",
        "answered no call with 503",
        "ingest accepted nothing while AML was down",
        "gave up on readings while AML was down",
        "scoring did not resume",
        "did not drain",
        "gave up on 2 readings",
        "poison 'a' has no dead letter",
        "were not all stored",
        "poison was stored as predictions",
        "2 dead letters, expected only the 1 poison",
    ):
        assert expected in text, expected
    assert not report.ok


def test_chaos_line_is_one_json_object_with_the_issue_keys():
    account = settle(_phases(), {_key("pump-1", 1): 150.0}, [_row("pump-1", 1)], [])
    line = chaos_line(account, fuzz_cases=10201, server_errors=0)
    assert line.startswith("CHAOS {")
    for key in ("accepted", "stored", "missing", "duplicated", "dead_lettered", "fuzz_cases"):
        assert f'"{key}": ' in line
    assert '"server_errors": 0' in line
