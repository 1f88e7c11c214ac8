"""A steady simulated fleet through the ingest function, until told to stop.

The chaos run does not know in advance how long its faults take (each waits on a condition),
so the fleet runs on its own thread until `stop()`. Each step's readings go through the
simulator's `IngestClient`, whose acknowledged requests are noted in the demo's `AcceptLog`:
that log is the list of readings the pipeline owes a prediction for. The client retries
503s (Event Hubs away) for longer than the usual run would, since a restart of the emulator is
one of the faults.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

from local.demo.traffic import AcceptLog, Identity
from simulator.client import ClientStats, IngestClient
from simulator.fleet import Fleet, FleetConfig
from simulator.run import plan_start

__all__ = ["SteadyTraffic"]


class SteadyTraffic:
    """`devices` machines, one reading each per `interval_s` simulated s, at `speed`× real time."""

    def __init__(
        self,
        url: str,
        key: str,
        *,
        devices: int,
        speed: float,
        interval_s: float,
        longest_s: float,
        seed: int = 0,
    ) -> None:
        """Plan a fleet whose clock reaches now after `longest_s` real seconds at most.

        Raises:
            ValueError: `longest_s` at `speed` would send readings older than the ingest keeps.
        """
        self.devices, self.speed, self.interval_s = devices, speed, interval_s
        start = plan_start(datetime.now(UTC), speed=speed, duration_s=longest_s)
        self._fleet = Fleet(
            FleetConfig(devices=devices, seed=seed, interval_s=interval_s), start=start
        )
        self._longest_s = longest_s
        self.accepts = AcceptLog()
        self._client = IngestClient(
            url,
            key,
            max_retries=40,  # ~6 minutes of 503s at the 10 s cap: outlasts an emulator restart
            session_factory=self.accepts.session_factory,
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chaos-traffic", daemon=True)
        self._error: BaseException | None = None
        self.steps = 0

    @property
    def rate(self) -> float:
        """Readings offered per real second."""
        return self.devices * self.speed / self.interval_s

    def start(self) -> None:
        """Start sending on a background thread."""
        self._thread.start()

    def stop(self) -> ClientStats:
        """Stop stepping, wait for every request to be answered, and return the account.

        Raises:
            RuntimeError: the sending thread failed (its exception is chained).
        """
        self._stop.set()
        self._thread.join()
        self._client.close()
        if self._error is not None:
            raise RuntimeError(f"the fleet's sender failed: {self._error}") from self._error
        return self._client.stats()

    def cancel(self, timeout: float = 30.0) -> None:
        """Stop now, giving up on unanswered requests (teardown after a failure)."""
        self._stop.set()
        self._client.cancel()
        self._thread.join(timeout)
        self._client.close()

    def stats(self) -> ClientStats:
        """The client's account so far."""
        return self._client.stats()

    @property
    def fatal(self) -> str | None:
        """A configuration error that stopped the client (wrong key, URL), if any."""
        return self._client.fatal

    def accepted(self) -> dict[Identity, float]:
        """A copy of every acknowledged reading and when its 202 arrived (wall clock)."""
        return self.accepts.snapshot()

    def _run(self) -> None:
        period = self.interval_s / self.speed
        started = time.monotonic()
        try:
            while not self._stop.is_set() and self._client.fatal is None:
                if self.steps * period >= self._longest_s:
                    break  # the fleet's clock has reached now: later readings would be refused
                self._client.submit(self._fleet.step())
                self._fleet.drain_truth()
                self.steps += 1
                due = started + self.steps * period
                while not self._stop.is_set() and (wait := due - time.monotonic()) > 0:
                    self._stop.wait(min(wait, 0.05))
                    self._client.poll()  # a partial batch goes out without waiting a step
            self._client.flush()
        except BaseException as exc:  # reported by stop()
            self._error = exc
