from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from shared.deadletters import DeadLetter

AT = datetime(2026, 11, 27, 23, 30, tzinfo=UTC)


def letter(**kw) -> DeadLetter:
    base = {
        "payload": "x",
        "reason": "bad",
        "source": "event",
        "occurred_at": AT,
        "partition": "0",
        "sequence_number": 5,
    }
    return DeadLetter(**{**base, **kw})


def test_dead_letter_partition_key_is_the_utc_day():
    tokyo = AT.astimezone(timezone(timedelta(hours=9)))  # already 28 Nov there
    assert letter(occurred_at=tokyo).partition_key == "20261127"


def test_dead_letter_row_key_is_stable_for_the_same_origin_and_payload():
    assert letter().row_key == letter().row_key
    assert len(letter().row_key) == 32
    assert letter().row_key != letter(sequence_number=6).row_key
    assert letter().row_key != letter(payload="y").row_key
    assert letter().row_key == letter(reason="another wording").row_key
