"""The chaos run: the local stack under a steady fleet while faults come one after another.

Order of faults, each its own phase (readings are booked to the phase their 202 arrived in):
a quiet baseline; score hosts killed with SIGKILL in the middle of a batch, one after another,
and started again; AML answering 503 and 429-with-Retry-After for a share of calls; AML down
for a while (the back-pressure phase: ingest must keep accepting, scoring must resume by itself
and the backlog drain, at a rate we measure); Azurite stopped and started again on its on-disk
state; the Event Hubs emulator killed and started again; poison sent straight to the hub. Then
the fleet stops, the pipeline drains, and the books are settled: every accepted reading must
have exactly one Predictions row. Security probes run against the stack that has been through
all that, and its logs are scanned for secrets.

Every wait has a deadline; a deadline missed is reported in the phase's notes, never hidden.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from fleetscore.deadletters import InMemoryReplayLog, days_between, list_letters
from local.demo.stack import DemoConfig, Stack
from local.demo.summary import PredictionsTable
from shared.readings import parse_timestamp, row_key
from shared.store import TableStore

from .account import Phase, settle
from .faults import FaultProxy
from .poison import OWN_DEVICES, REJECTED_DEVICES, PoisonSent, poison_verdict, send_poison
from .profile import FULL, Profile
from .report import ChaosReport
from .stored import StoredRows
from .traffic import SteadyTraffic

__all__ = ["ChaosRun"]


class ChaosRun:
    """One run: start the stack behind a fault proxy, inject faults, settle the books."""

    def __init__(
        self,
        config: DemoConfig,
        profile: Profile = FULL,
        *,
        out: TextIO | None = None,
        proxy_port: int = 0,
    ) -> None:
        """Nothing starts until `start()`; `proxy_port` 0 lets the OS choose."""
        self.profile = profile
        self.proxy = FaultProxy(f"http://127.0.0.1:{config.ports.aml}", port=proxy_port)
        self._config = config
        self.stack: Stack | None = None
        self.traffic: SteadyTraffic | None = None
        self.stored: StoredRows | None = None
        self.phases: list[Phase] = []
        self._out = out
        self._started = 0.0

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Stack:
        """Start the proxy, the stack (Azurite on disk, AML through the proxy) and the fleet."""
        self._started = time.monotonic()
        self.proxy.start()
        config = replace(
            self._config,
            azurite_on_disk=True,
            aml_endpoint_url=self.proxy.score_url,
            ownership_expiration=self.profile.ownership_expiration_s,
        )
        self.stack = Stack(config)
        self.say(f"starting the stack (logs in {config.logs})")
        self.stack.start()
        self.stored = StoredRows(self.stack.storage_connection)
        p = self.profile
        self.traffic = SteadyTraffic(
            self.stack.ingest_url,
            self.stack.function_key,
            devices=p.devices,
            speed=p.speed,
            interval_s=p.interval_s,
            longest_s=p.longest_s,
        )
        self.say(f"fleet: {p.devices} devices, {self.traffic.rate:g} readings/s offered")
        self.traffic.start()
        return self.stack

    def close(self) -> None:
        """Stop the fleet, the stack and the proxy; each is stopped even if one before fails."""
        with contextlib.ExitStack() as done:
            done.callback(self.proxy.stop)
            if self.stored is not None:
                done.callback(self.stored.close)
            if self.stack is not None:
                done.callback(self.stack.stop)
            if self.traffic is not None:
                self.traffic.cancel()

    def run(self) -> ChaosReport:
        """Every fault in turn, then drain and settle (the stack stays up for probes)."""
        stack, traffic, p = self._parts()
        with self.phase("baseline") as phase:
            self.quiet(p.quiet_s)
            self.catch_up(phase)
        for i in range(p.host_kills):
            self.kill_score_host(stack.score_host_names[i % len(stack.score_host_names)])
        self.aml_flaky()
        self.aml_outage()
        self.restart(
            "azurite", "Azurite restarted (on-disk state)", kill=False, down_s=p.storage_down_s
        )
        self.restart(
            "eventhubs", "Event Hubs emulator killed and restarted", kill=True, down_s=p.hub_down_s
        )
        sent = self.poison()
        with self.phase("drain") as phase:
            sender = traffic.stop()
            self.say(
                f"fleet stopped: {sender.accepted:,} readings accepted, {sender.failed:,} gave up"
            )
            accepted = traffic.accepted()
            drained = self.catch_up(phase)
            table = PredictionsTable(stack.storage_connection)
            try:
                rows = table.rows()
            finally:
                table.close()
        letters = self.dead_letters()
        own = {(r.device_id, r.row_key) for r in rows if r.device_id.startswith(OWN_DEVICES)}
        return ChaosReport(
            account=settle(self.phases, accepted, rows, letters, own_devices=OWN_DEVICES),
            phases=self.phases,
            poison=poison_verdict(sent, letters, own),
            drained=drained,
            seconds=round(time.monotonic() - self._started, 1),
            sender={
                "accepted": sender.accepted,
                "failed": sender.failed,
                "rejected": sender.rejected,
                "retries": sender.retries,
                "requests": sender.requests,
            },
            proxy=self.proxy.counts(),
            rescored=_rescored(self.proxy.scored(), accepted),
        )

    # --- the faults --------------------------------------------------------------------------

    def kill_score_host(self, host: str) -> None:
        """SIGKILL `host` inside a scoring call; the others take its partitions; restart it.

        The proxy holds scoring calls for `hold_s` while the kill is aimed, so the invocation
        the log shows running is still running when the signal lands; the dead host's log then
        confirms it never ended.
        """
        stack, _, p = self._parts()
        with self.phase(f"{host} killed mid-batch") as phase:
            self.quiet(p.lead_s)
            running: set[str] = set()

            def caught_running() -> bool:
                running.clear()
                running.update(stack.in_flight(host))
                return bool(running)

            self.proxy.hold(p.hold_s)
            try:
                self._wait(caught_running, 30.0, poll=0.02)
                stack.processes.kill(host)
            finally:
                self.proxy.healthy()
            interrupted = stack.never_ended(host, running)
            phase.notes["mid_batch"] = bool(interrupted)
            t0 = time.monotonic()
            phase.notes["taken_over"] = stack.wait_balanced(timeout=60.0)
            phase.notes["takeover_s"] = round(time.monotonic() - t0, 1)
            stack.processes.start_again(host)
            phase.notes["rebalanced"] = stack.wait_balanced(timeout=60.0)
            self.say(
                f"  killed {host} {'in the middle of' if interrupted else 'outside'} an "
                f"invocation; the others held every partition after {phase.notes['takeover_s']}"
                " s; restarted"
            )
            self.catch_up(phase)
            self.quiet(p.quiet_s)

    def aml_flaky(self) -> None:
        """A share of scoring calls get 503, another share 429 with Retry-After."""
        _, _, p = self._parts()
        with self.phase("AML 503 / 429 Retry-After") as phase:
            before = self.proxy.counts()
            self.proxy.flaky(share_503=p.share_503, share_429=p.share_429, retry_after=1.0)
            self.quiet(p.flaky_s)

            def both_hit() -> bool:
                now = _delta(before, self.proxy.counts())
                return min(now.get("injected_503", 0), now.get("injected_429", 0)) >= p.flaky_hits

            phase.notes["both_hit"] = self._wait(both_hit, 4 * p.flaky_s + 30.0, poll=0.2)
            self.proxy.healthy()
            phase.notes.update(_delta(before, self.proxy.counts()))
            self.catch_up(phase)
            self.quiet(p.quiet_s)

    def aml_outage(self) -> None:
        """AML answers 503 to everything for `outage_s`; the hub holds the backlog meanwhile."""
        _, traffic, p = self._parts()
        stored = self._stored()
        with self.phase("AML down (back-pressure)") as phase:
            counts = self.proxy.counts()
            accepted_before = len(traffic.accepted())
            failed_before = traffic.stats().failed
            self.proxy.down()
            self.quiet(p.outage_s)
            accepted = set(traffic.accepted())
            stored_before = set(stored.refresh())
            backlog = accepted - stored_before
            self.proxy.healthy()
            restored = time.monotonic()
            notes = phase.notes
            notes["down_answers"] = _delta(counts, self.proxy.counts()).get("down", 0)
            notes["accepted_while_down"] = len(accepted) - accepted_before
            notes["ingest_gave_up_while_down"] = traffic.stats().failed - failed_before
            notes["backlog"] = len(backlog)
            resumed = self._wait(lambda: bool(backlog & stored.refresh()), p.resume_timeout_s)
            notes["resumed_s"] = round(time.monotonic() - restored, 1) if resumed else None
            notes["drained"] = self._wait(lambda: backlog <= stored.refresh(), p.drain_timeout_s)
            took = time.monotonic() - restored
            notes["drain_s"] = round(took, 1)
            notes["backlog_per_s"] = round(len(backlog) / took, 1) if notes["drained"] else None
            notes["stored_per_s_while_draining"] = round(len(stored.keys - stored_before) / took, 1)
            self.say(
                f"  AML down {p.outage_s:g} s: ingest accepted {notes['accepted_while_down']:,} "
                f"readings meanwhile; backlog {len(backlog):,}; scoring resumed after "
                f"{notes['resumed_s']} s; backlog drained in {took:.1f} s "
                f"({notes['backlog_per_s']} readings/s on top of new traffic; "
                f"{notes['stored_per_s_while_draining']} stored/s in all)"
            )
            self.catch_up(phase)
            self.quiet(p.quiet_s)

    def restart(self, service: str, title: str, *, kill: bool, down_s: float) -> None:
        """Stop `service` (SIGTERM, or SIGKILL if `kill`), leave it down, start it again."""
        stack, _, p = self._parts()
        with self.phase(title) as phase:
            if kill:
                stack.processes.kill(service)
            else:
                stack.processes.stop([service])
            self.quiet(down_s)
            t0 = time.monotonic()
            stack.processes.start_again(service)
            phase.notes["restart_s"] = round(time.monotonic() - t0, 1)
            phase.notes["rebalanced"] = stack.wait_balanced(timeout=60.0)
            self.say(f"  {service} down {down_s:g} s, back after {phase.notes['restart_s']} s")
            self.catch_up(phase)
            self.quiet(p.quiet_s)

    def poison(self) -> PoisonSent:
        """Send poison straight to the hub; wait until each has its dead letter."""
        stack, _, p = self._parts()
        with self.phase("poison in the stream") as phase:
            self.proxy.reject_devices(REJECTED_DEVICES)
            sent = send_poison(stack.eventhub_connection, stack.hub)
            phase.notes["sent"] = list(sent.kinds)

            def all_lettered() -> bool:
                verdict = poison_verdict(sent, self.dead_letters(), set())
                return all(verdict["dead_lettered"].values())

            phase.notes["all_dead_lettered"] = self._wait(all_lettered, 60.0)
            self.catch_up(phase)
            self.quiet(p.quiet_s)
        return sent

    # --- reading the stack -------------------------------------------------------------------

    def catch_up(self, phase: Phase) -> bool:
        """Wait until every reading accepted so far is stored; note whether and how fast."""
        _, traffic, p = self._parts()
        stored = self._stored()
        accepted = set(traffic.accepted())
        t0 = time.monotonic()
        ok = self._wait(lambda: accepted <= stored.refresh(), p.drain_timeout_s)
        phase.notes["caught_up"] = ok
        phase.notes["caught_up_s"] = round(time.monotonic() - t0, 1)
        return ok

    def dead_letters(self) -> list[dict[str, Any]]:
        """Every dead letter of the run's days."""
        stack, _, _ = self._parts()
        today = datetime.now(UTC).date()
        days = days_between(today - timedelta(days=8), today)
        with TableStore.from_connection_string(stack.storage_connection) as store:
            return list_letters(store, InMemoryReplayLog(), days, limit=None)

    def _stored(self) -> StoredRows:
        if self.stored is None:
            raise RuntimeError("start() the run first")
        return self.stored

    # --- plumbing ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[Phase]:
        """Book what happens inside to a new phase (its window is wall-clock time)."""
        phase = Phase(name, started=time.time())
        self.phases.append(phase)
        self.say(f"==> {name}")
        try:
            yield phase
        finally:
            phase.ended = time.time()

    def quiet(self, seconds: float) -> None:
        """Let the fleet send for `seconds`, failing fast if a process died."""
        stack, traffic, _ = self._parts()
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            stack.processes.check_alive()
            if traffic.fatal is not None:
                raise RuntimeError(f"the fleet stopped: {traffic.fatal}")
            time.sleep(min(left, 0.2))

    def _wait(self, condition: Callable[[], bool], timeout: float, *, poll: float = 0.5) -> bool:
        stack, _, _ = self._parts()
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() >= deadline:
                return False
            stack.processes.check_alive()
            time.sleep(poll)
        return True

    def _parts(self) -> tuple[Stack, SteadyTraffic, Profile]:
        if self.stack is None or self.traffic is None:
            raise RuntimeError("start() the run first")
        return self.stack, self.traffic, self.profile

    def say(self, line: str) -> None:
        """A progress line (flushed: this is long work)."""
        if self._out is not None:
            self._out.write(line + "\n")
            self._out.flush()


def _rescored(scored: Counter[tuple[str, str]], accepted: dict[tuple[str, str], float]) -> int:
    """Accepted readings that were scored more than once (the proxy saw them twice)."""
    per_reading: Counter[tuple[str, str]] = Counter()
    for (device, stamp), n in scored.items():
        try:
            per_reading[(device, row_key(parse_timestamp(stamp)))] += n
        except Exception:  # not a reading timestamp: nothing to count
            continue
    return sum(1 for key, n in per_reading.items() if n > 1 and key in accepted)


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {
        k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)
    }
