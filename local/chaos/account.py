"""The chaos run's books: each accepted reading against the Predictions table, fault by fault.

A reading belongs to the fault during which its 202 arrived (`Phase` windows, wall clock), so
the report can say, for a score host killed mid-batch, that the readings accepted around the
kill were all stored once. Counts come from two independent places: the fleet's acknowledged
readings and a scan of the table. For one accepted reading, no row is *missing*; a row beyond
the first for the same instant is *duplicated*; a row for a reading nobody accepted (outside the
poison phase's own devices) is *unexpected*.

Rows are keyed by device and reading time and written as upserts, so a redelivered reading
overwrites its own row: *duplicated* can only count a second row under another key (a reading
time written two ways). That redeliveries happened, and were absorbed, is shown separately by
the fault proxy, which counts how often each reading was scored (`ChaosReport.rescored`).
"""

from __future__ import annotations

import bisect
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from local.demo.summary import PredictionRow
from shared.readings import parse_timestamp, row_key

__all__ = ["Account", "Phase", "PhaseAccount", "chaos_line", "settle"]

Identity = tuple[str, str]


@dataclass
class Phase:
    """One fault (or a quiet stretch): when it ran, and what it observed on the way."""

    name: str
    started: float  # wall clock, s
    ended: float = float("inf")
    notes: dict[str, Any] = field(default_factory=dict)

    def holds(self, when: float) -> bool:
        """Whether `when` (wall clock) falls in this phase."""
        return self.started <= when < self.ended


@dataclass(frozen=True)
class PhaseAccount:
    """What happened to the readings accepted during one phase."""

    name: str
    accepted: int
    stored: int
    missing: int
    duplicated: int
    dead_lettered: int
    notes: Mapping[str, Any]


@dataclass(frozen=True)
class Account:
    """The whole run's books."""

    phases: list[PhaseAccount]
    accepted: int
    stored: int
    missing: int
    duplicated: int
    unexpected: int
    dead_lettered: int
    dead_letter_reasons: Mapping[str, int]
    missing_sample: list[Identity]

    @property
    def ok(self) -> bool:
        """Every accepted reading stored exactly once, and nothing else stored."""
        return self.missing == 0 and self.duplicated == 0 and self.unexpected == 0


def _instant(row: PredictionRow) -> str:
    try:
        return row_key(parse_timestamp(row.reading_time))
    except Exception:  # a row without a readable reading time stands for no reading
        return row.row_key + "?"


def settle(
    phases: Sequence[Phase],
    accepted_at: Mapping[Identity, float],
    rows: Iterable[PredictionRow],
    letters: Sequence[Mapping[str, Any]],
    *,
    own_devices: str = "chaos-",
) -> Account:
    """Compare accepted readings with stored rows and dead letters, per phase.

    `own_devices` prefixes the device ids the run itself put on the hub (poison and its
    neighbours); their rows are checked by the poison phase, not counted here. A dead letter
    counts in the phase its data entered the hub (`occurred_at`).
    """
    copies: Counter[Identity] = Counter()
    unexpected = 0
    for row in rows:
        if row.device_id.startswith(own_devices):
            continue
        reading = (row.device_id, _instant(row))
        if reading not in accepted_at:
            unexpected += 1
            continue
        copies[reading] += 1

    starts = [p.started for p in phases]

    def phase_of(when: float) -> int:
        """The last phase that had started by `when` (the gaps between phases are µs)."""
        return max(0, bisect.bisect_right(starts, when) - 1)

    per: list[Counter[str]] = [Counter() for _ in phases]
    missing: list[Identity] = []
    for reading, when in accepted_at.items():
        tally = per[phase_of(when)]
        n = copies.get(reading, 0)
        tally["accepted"] += 1
        tally["stored"] += n > 0
        tally["duplicated"] += max(0, n - 1)
        if n == 0:
            tally["missing"] += 1
            missing.append(reading)
    reasons: Counter[str] = Counter()
    for letter in letters:
        reasons[_reason_kind(str(letter.get("reason", "")))] += 1
        when = _epoch(letter.get("occurred_at"))
        if when is not None and phases:
            per[phase_of(when)]["dead_lettered"] += 1
    accounts = [
        PhaseAccount(
            name=p.name,
            accepted=t["accepted"],
            stored=t["stored"],
            missing=t["missing"],
            duplicated=t["duplicated"],
            dead_lettered=t["dead_lettered"],
            notes=dict(p.notes),
        )
        for p, t in zip(phases, per, strict=True)
    ]
    return Account(
        phases=accounts,
        accepted=len(accepted_at),
        stored=sum(a.stored for a in accounts),
        missing=len(missing),
        duplicated=sum(a.duplicated for a in accounts),
        unexpected=unexpected,
        dead_lettered=len(letters),
        dead_letter_reasons=dict(reasons),
        missing_sample=sorted(missing)[:10],
    )


def _reason_kind(reason: str) -> str:
    """The reason up to its first colon, e.g. 'undecodable event'."""
    head = reason.split(":", 1)[0].strip()
    return head[:80] or "(no reason)"


def _epoch(value: Any) -> float | None:
    if value is None:
        return None
    try:
        stamp = value if hasattr(value, "timestamp") else parse_timestamp(str(value))
        return float(stamp.timestamp())
    except Exception:
        return None


def chaos_line(
    account: Account, *, fuzz_cases: int, server_errors: int, redelivered: int = 0
) -> str:
    """`CHAOS {...}`: the run's figures as one JSON object, the last line of `make chaos`."""
    figures = {
        "accepted": account.accepted,
        "stored": account.stored,
        "missing": account.missing,
        "duplicated": account.duplicated,
        "dead_lettered": account.dead_lettered,
        "fuzz_cases": fuzz_cases,
        "server_errors": server_errors,
        "unexpected": account.unexpected,
        "redelivered": redelivered,
    }
    return "CHAOS " + json.dumps(figures, separators=(", ", ": "))


def as_dict(account: Account) -> dict[str, Any]:
    """The account as plain JSON-able data (for a results file)."""
    return asdict(account)
