"""`make chaos`, short: the whole stack under every fault in turn, then the books settled.

One run of the quick profile (about two minutes) is shared by the module's tests: score hosts
killed with SIGKILL mid-batch, AML 503/429 and a full outage through the fault proxy, Azurite
restarted on its on-disk state, the Event Hubs emulator killed and restarted, poison sent
straight to the hub. Each test then checks one promise against what the run recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import pytest

from local.chaos.profile import QUICK
from local.chaos.report import ChaosReport
from local.chaos.run import ChaosRun
from local.chaos.security import scan_logs, stack_secrets
from local.demo import DemoConfig, Ports, Stack
from local.demo.processes import free_ports

pytestmark = [pytest.mark.stack, pytest.mark.azurite]


@dataclass
class Done:
    report: ChaosReport
    stack: Stack


@pytest.fixture(scope="module")
def done(tmp_path_factory) -> Done:
    *ports, proxy_port = free_ports(len(fields(Ports)) + 1)
    config = DemoConfig(
        ports=Ports(*ports), workdir=tmp_path_factory.mktemp("chaos"), score_hosts=2
    )
    run = ChaosRun(config, QUICK, proxy_port=proxy_port)
    try:
        stack = run.start()
        report = run.run()
    finally:
        run.close()
    return Done(report, stack)


def _phase(done: Done, start: str):
    return next(p for p in done.report.account.phases if p.name.startswith(start))


def test_the_run_reports_no_broken_promise(done):
    assert done.report.problems() == []
    assert done.report.ok


def test_every_accepted_reading_is_stored_exactly_once_through_every_fault(done):
    account = done.report.account
    assert account.accepted > 1000
    assert done.report.drained
    for phase in account.phases:
        assert phase.missing == 0, (phase.name, account.missing_sample)
        assert phase.duplicated == 0, phase.name
        assert phase.stored == phase.accepted, phase.name
    assert account.unexpected == 0  # no prediction for a reading that was not accepted
    assert done.report.sender["failed"] == 0  # the fleet never gave up on a reading
    for phase in account.phases:
        assert phase.notes["caught_up"], phase.name  # recovered by itself after each fault


def test_redeliveries_happened_and_were_absorbed(done):
    # The batch a killed host was scoring is scored again by the host that takes over: those
    # readings went through AML twice and still have one row each (checked above).
    assert done.report.rescored > 0


def test_score_hosts_were_killed_mid_batch_and_the_other_took_over(done):
    kills = [p for p in done.report.account.phases if "killed mid-batch" in p.name]
    assert len(kills) == QUICK.host_kills
    for phase in kills:
        assert phase.notes["mid_batch"], phase.name  # its log shows an invocation never ended
        assert phase.notes["taken_over"], phase.name
        assert phase.notes["rebalanced"], phase.name
        assert phase.accepted > 0


def test_aml_throttling_and_errors_hit_real_calls_and_nothing_was_dead_lettered(done):
    phase = _phase(done, "AML 503")
    assert phase.notes["both_hit"]
    assert phase.notes["injected_503"] >= QUICK.flaky_hits
    assert phase.notes["injected_429"] >= QUICK.flaky_hits
    assert phase.dead_lettered == 0  # transient answers are retried, never dead-lettered


def test_with_aml_down_ingest_keeps_accepting_and_the_backlog_drains_by_itself(done):
    notes = _phase(done, "AML down").notes
    assert notes["down_answers"] > 0  # scoring calls really were refused
    assert notes["accepted_while_down"] > 0
    assert notes["ingest_gave_up_while_down"] == 0
    assert notes["backlog"] > 0
    assert notes["resumed_s"] is not None
    assert notes["drained"]
    assert notes["backlog_per_s"] > 0


def test_storage_and_event_hubs_restarts_lose_nothing(done):
    phases = done.report.account.phases
    for start in ("Azurite restarted", "Event Hubs emulator killed"):
        phase = _phase(done, start)
        after = phases[phases.index(phase) + 1]
        assert phase.notes["rebalanced"], start
        assert phase.notes["caught_up"], start
        assert phase.missing == 0, start
        # The fleet may still be backing off from the emulator's 503s when a short phase ends,
        # so the readings exposed to the restart are those of the phase and the one after it.
        assert phase.accepted + after.accepted > 0, start
        assert after.missing == 0, start


def test_each_poison_is_dead_lettered_with_its_reason_and_its_neighbours_are_stored(done):
    poison = done.report.poison
    assert poison["dead_lettered"] == {
        "not JSON": True,
        "wrong schema version": True,
        "model rejects the reading": True,
        "huge event": True,
    }
    assert "not JSON" in poison["reasons"]["not JSON"]
    assert "unsupported schema 2" in poison["reasons"]["wrong schema version"]
    assert "devices[0].readings" in poison["reasons"]["model rejects the reading"]
    assert "readings[0].metrics.temperature" in poison["reasons"]["huge event"]
    assert poison["neighbours_stored"] == poison["neighbours"] == 6
    assert poison["strays"] == []  # no poison was scored and stored
    # Only the poison: no fault above made a dead letter of good data.
    assert done.report.account.dead_lettered == 4
    assert done.report.ok


def test_no_log_of_the_whole_run_holds_a_secret(done):
    logs = sorted(done.stack.config.logs.glob("*.log"))
    assert len(logs) >= 7
    assert scan_logs(logs, stack_secrets(done.stack)) == []
