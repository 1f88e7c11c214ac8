"""The real app under the local host on a free port, with in-memory Event Hubs and Table Storage.

Module-scoped, so hypothesis runs many examples against one host; the function modules' adapters
are swapped back when the module's tests end.

How many examples each fuzz test runs (`fuzz_settings`), from the environment:

- neither variable set (`make test`): each test's own default, derandomised, so every run sees
  the same cases;
- ``FLEETSCORE_FUZZ_EXAMPLES``: the cheap tests that call the validator in-process;
- ``FLEETSCORE_FUZZ_HTTP_EXAMPLES``: the tests that go over HTTP to the host (12 of the 15
  fuzz runs, counting schemathesis's per operation and mode); when unset it is
  FLEETSCORE_FUZZ_EXAMPLES divided by 20, but never below the test's default.

Either variable makes the run explore (random, not derandomised). When ``FLEETSCORE_FUZZ_REPORT``
names a file, the session writes there what actually ran, for `make chaos` to report rather
than estimate: ``{"cases": N, "server_errors": M, "by_test": {nodeid: n}}``. A case is one run
of a fuzz test's body (shrinking and replays included); a server error is any response with a
status of 500 or more through the `http` session, the one every HTTP fuzz test sends through.
"""

from __future__ import annotations

import functools
import json
import os
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
from hypothesis import HealthCheck, settings

import ingest_function
import query_function
from local.host.http import HttpHost
from shared.publisher import InMemoryPublisher
from shared.store import InMemoryTableStore
from shared.wiring import IngestApp

ROOT = Path(__file__).resolve().parents[2]
KEY = "api-fuzz-test-key-0123456789"
FUZZ_EXAMPLES_ENV = "FLEETSCORE_FUZZ_EXAMPLES"
FUZZ_HTTP_EXAMPLES_ENV = "FLEETSCORE_FUZZ_HTTP_EXAMPLES"
FUZZ_REPORT_ENV = "FLEETSCORE_FUZZ_REPORT"
HTTP_SHARE = 20  # 12 HTTP runs to 3 in-process: keeps them a small share of a long run

Test = TypeVar("Test", bound=Callable[..., Any])


@dataclass
class FuzzTally:
    """What the fuzz tests ran and what the server answered, counted as it happens."""

    by_test: Counter[str] = field(default_factory=Counter)
    server_errors: int = 0
    current: str = "<no test>"

    def count_case(self) -> None:
        """One example of the current test is about to run its body."""
        self.by_test[self.current] += 1

    def count_response(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        """A `requests` response hook: returns None, so the response passes through unchanged."""
        if response.status_code >= 500:
            self.server_errors += 1

    def report(self) -> dict[str, Any]:
        """The totals as the JSON document `make chaos` reads."""
        return {
            "cases": sum(self.by_test.values()),
            "server_errors": self.server_errors,
            "by_test": dict(sorted(self.by_test.items())),
        }

    def write_report(self, path: Path) -> None:
        """Write `report()` to `path` as JSON."""
        path.write_text(json.dumps(self.report(), indent=2) + "\n", encoding="utf-8")


TALLY = FuzzTally()


def _count_from(environ: Mapping[str, str], key: str) -> int | None:
    raw = environ.get(key, "").strip()
    if not raw:
        return None
    try:
        count = int(raw)
    except ValueError:
        raise ValueError(f"{key}: must be a whole number of examples, got {raw!r}") from None
    if count < 1:
        raise ValueError(f"{key}: must be at least 1, got {raw!r}")
    return count


def fuzz_examples(default: int, *, http: bool, environ: Mapping[str, str]) -> tuple[int, bool]:
    """How many examples a fuzz test runs, and whether derandomised (see the module docstring)."""
    cheap = _count_from(environ, FUZZ_EXAMPLES_ENV)
    wire = _count_from(environ, FUZZ_HTTP_EXAMPLES_ENV)
    derandomize = cheap is None and wire is None
    if not http:
        return (default if cheap is None else cheap), derandomize
    if wire is not None:
        return wire, derandomize
    if cheap is not None:
        return max(default, cheap // HTTP_SHARE), derandomize
    return default, derandomize


def fuzz_settings(default: int, *, http: bool, tally: FuzzTally = TALLY) -> Callable[[Test], Test]:
    """Decorate a `@given` test (place it above): settings from the environment, cases counted.

    No deadline: a request's time is the host's, not a property of the input. Counting replaces
    hypothesis's documented `inner_test` hook (the one pytest-asyncio wraps), so every example
    that reaches the body counts once and nothing else does: not rejected draws, not set-up.
    """
    examples, derandomize = fuzz_examples(default, http=http, environ=os.environ)
    chosen = settings(
        max_examples=examples,
        derandomize=derandomize,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )

    def apply(test: Test) -> Test:
        if not hasattr(test, "hypothesis"):
            raise TypeError(f"fuzz_settings goes above @given, not below it: {test.__name__}")
        configured = chosen(test)
        inner = configured.hypothesis.inner_test

        @functools.wraps(inner)
        def counted(*args: Any, **kwargs: Any) -> Any:
            tally.count_case()
            return inner(*args, **kwargs)

        configured.hypothesis.inner_test = counted
        return configured

    return apply


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write the tally where FLEETSCORE_FUZZ_REPORT says; nothing when it is unset."""
    path = os.environ.get(FUZZ_REPORT_ENV)
    if path:
        TALLY.write_report(Path(path))


@pytest.fixture(autouse=True)
def _tally_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """Cases count against the test running them."""
    TALLY.current = request.node.nodeid
    yield
    TALLY.current = "<no test>"


@pytest.fixture(scope="module")
def hub() -> Iterator[InMemoryPublisher]:
    """The ingest function publishing into memory (Event Hubs always up)."""
    publisher = InMemoryPublisher()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ingest_function, "_app", IngestApp(publisher))
        yield publisher


@pytest.fixture(scope="module")
def store() -> Iterator[InMemoryTableStore]:
    """The query function reading an in-memory store with its tables created."""
    tables = InMemoryTableStore()
    tables.create_tables()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(query_function, "_store", tables)
        yield tables


@pytest.fixture(scope="module")
def host(hub: InMemoryPublisher, store: InMemoryTableStore) -> Iterator[HttpHost]:
    """The repo's own functions behind the local host, on 127.0.0.1 and a free port."""
    with HttpHost(ROOT, keys=[KEY], port=0) as running:
        yield running


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    """One keep-alive session for every request of a module; its 5xx answers are tallied."""
    with requests.Session() as session:
        session.hooks["response"].append(TALLY.count_response)
        yield session
