"""What a chaos run found, and the one verdict both `make chaos` and the tests use.

Every promise is a line in `problems()`: books (nothing missing, duplicated or invented), the
fleet never giving up, each fault having really happened (a kill that landed mid-batch, 503s and
429s that hit real calls, an outage the proxy enforced), the pipeline catching up after each
fault by itself, and the poison dead-lettered (and nothing else). An empty list is "ok".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .account import Account, Phase

__all__ = ["ChaosReport", "report_json"]

# A phase note that must be true when present, and what it means when it is not.
_MUST_HOLD = {
    "mid_batch": "the kill did not land in the middle of an invocation",
    "taken_over": "the other score hosts did not take over every partition",
    "rebalanced": "the partitions were not shared again after the restart",
    "both_hit": "503s and 429s did not both hit enough scoring calls",
    "caught_up": "the pipeline did not catch up after the fault",
    "drained": "the backlog did not drain",
    "all_dead_lettered": "not every poison event was dead-lettered in time",
}


@dataclass
class ChaosReport:
    """Everything the run measured; `ok` is the verdict."""

    account: Account
    phases: list[Phase]
    poison: dict[str, Any]
    drained: bool
    seconds: float
    sender: dict[str, Any]
    proxy: dict[str, int]
    rescored: int = 0  # readings scored more than once (redeliveries absorbed)
    extra: dict[str, Any] = field(default_factory=dict)

    def problems(self) -> list[str]:
        """Every promise the run saw broken, in words; empty when all held."""
        out: list[str] = []
        a = self.account
        if a.missing:
            out.append(f"{a.missing} accepted readings have no prediction, e.g. {a.missing_sample}")
        if a.duplicated:
            out.append(f"{a.duplicated} readings have more than one prediction row")
        if a.unexpected:
            out.append(f"{a.unexpected} prediction rows are for readings nobody accepted")
        if not self.drained:
            out.append("the pipeline did not drain after the fleet stopped")
        if self.sender.get("failed"):
            out.append(f"the fleet gave up on {self.sender['failed']} readings")
        for phase in self.phases:
            for key, meaning in _MUST_HOLD.items():
                if key in phase.notes and not phase.notes[key]:
                    out.append(f"{phase.name}: {meaning}")
            if "backlog" in phase.notes:  # the outage
                notes = phase.notes
                if not notes.get("down_answers"):
                    out.append(f"{phase.name}: the proxy answered no call with 503")
                if not notes.get("accepted_while_down"):
                    out.append(f"{phase.name}: ingest accepted nothing while AML was down")
                if notes.get("ingest_gave_up_while_down"):
                    out.append(f"{phase.name}: the fleet gave up on readings while AML was down")
                if notes.get("resumed_s") is None:
                    out.append(f"{phase.name}: scoring did not resume after AML came back")
        for kind, lettered in self.poison.get("dead_lettered", {}).items():
            if not lettered:
                out.append(f"poison '{kind}' has no dead letter with its reason")
        if self.poison.get("neighbours_stored") != self.poison.get("neighbours"):
            out.append("valid events next to the poison were not all stored")
        if self.poison.get("strays"):
            out.append(f"poison was stored as predictions: {self.poison['strays']}")
        expected = len(self.poison.get("dead_lettered", {}))
        if a.dead_lettered != expected:
            out.append(f"{a.dead_lettered} dead letters, expected only the {expected} poison")
        return out

    @property
    def ok(self) -> bool:
        """No promise broken."""
        return not self.problems()


def report_json(report: ChaosReport) -> str:
    """The report as JSON (phases with their notes and books, and the problems)."""
    return json.dumps(
        {
            "ok": report.ok,
            "problems": report.problems(),
            "seconds": report.seconds,
            "phases": [vars(a) for a in report.account.phases],
            "poison": report.poison,
            "sender": report.sender,
            "proxy": report.proxy,
            "rescored": report.rescored,
            **report.extra,
        },
        indent=2,
        default=str,
    )
