"""How long and how hard a chaos run is: `FULL` for `make chaos`, `QUICK` for `make test`.

The fleet's clock is planned so that its readings stay inside the ingest's 7-day window for the
longest the run may take (`longest_s`); the speed and interval keep the offered rate modest, so
that what the run measures is recovery from faults, not a saturated machine.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FULL", "QUICK", "Profile"]


@dataclass(frozen=True)
class Profile:
    """How long and how hard: `FULL` for `make chaos`, `QUICK` for `make test`."""

    devices: int = 10
    speed: float = 300.0  # simulated seconds per real second
    interval_s: float = 30.0  # simulated seconds between a device's readings
    quiet_s: float = 10.0  # the baseline, and the calm after each fault
    host_kills: int = 3
    lead_s: float = 3.0  # fleet traffic before a kill, so the phase's readings are in flight
    hold_s: float = 2.0  # how long the proxy holds scoring calls while the kill is aimed
    flaky_s: float = 45.0  # at least; until each fault has hit `flaky_hits` calls
    flaky_hits: int = 10
    share_503: float = 0.25
    share_429: float = 0.25
    outage_s: float = 120.0
    storage_down_s: float = 5.0
    hub_down_s: float = 5.0
    drain_timeout_s: float = 300.0  # for the backlog, and to catch up after each fault
    resume_timeout_s: float = 330.0  # the trigger's retry waits up to 300 s between attempts
    longest_s: float = 1500.0  # the fleet's clock must not pass now before the run ends
    ownership_expiration_s: float = 30.0  # how soon a killed host's partitions are taken


FULL = Profile()
QUICK = Profile(
    devices=8,
    quiet_s=3.0,
    host_kills=2,
    flaky_s=8.0,
    flaky_hits=3,
    outage_s=12.0,
    storage_down_s=2.0,
    hub_down_s=2.0,
    drain_timeout_s=180.0,
    longest_s=900.0,
    ownership_expiration_s=8.0,
)
