"""The fuzz stage of `make chaos`: tests/api with many more examples, and what actually ran.

The chaos report must give the cases that ran and the 5xx the host answered, not what the
settings asked for: hypothesis stops early once a strategy is exhausted (the document operation
has a single case) and runs a failing body again while shrinking. So the suite counts as it goes
and writes FLEETSCORE_FUZZ_REPORT (tests/api/conftest.py); this runs it in a subprocess, so a
crash or a failure in the suite is a result to report rather than the end of the chaos run, and
reads the counts back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "CHAOS_EXAMPLES",
    "CHAOS_HTTP_EXAMPLES",
    "EXAMPLES_ENV",
    "HTTP_EXAMPLES_ENV",
    "REPORT_ENV",
    "FuzzResult",
    "run_fuzz",
]

EXAMPLES_ENV = "FLEETSCORE_FUZZ_EXAMPLES"
HTTP_EXAMPLES_ENV = "FLEETSCORE_FUZZ_HTTP_EXAMPLES"
REPORT_ENV = "FLEETSCORE_FUZZ_REPORT"

# Cases = 3 in-process tests x CHAOS_EXAMPLES + 12 HTTP runs x CHAOS_HTTP_EXAMPLES + 1 (the
# document has one case), so 10,201: 2% over the 10,000 floor in case a strategy runs out early.
# Measured on the 2-core dev box (2026-11-27, load 1-2, others' work running): these numbers ran
# 10,201 cases in 145 s wall (pytest 143 s); 3,000/150 ran 10,801 in 167 s. A case costs ~15 ms
# either side of the split (hypothesis generating lists of readings dominates, not the HTTP round
# trip), so shifting examples between the two barely changes the time; only the total does.
CHAOS_EXAMPLES = 3000
CHAOS_HTTP_EXAMPLES = 100

TIMED_OUT = -9  # the returncode reported when `timeout` stopped pytest
PYTEST_ARGS = ("-m", "pytest", "tests/api", "-q", "-p", "no:cacheprovider")


@dataclass(frozen=True)
class FuzzResult:
    """What one fuzz run did, counted by the suite itself.

    Attributes:
        cases: fuzz test bodies run (one per hypothesis example, shrinking included).
        server_errors: responses with status 500 or more.
        failed: pytest failed, or wrote no report; the log says why.
        returncode: pytest's exit status.
        seconds: wall time of the run.
        by_test: cases per test node id.
    """

    cases: int
    server_errors: int
    failed: bool
    returncode: int
    seconds: float
    by_test: dict[str, int] = field(default_factory=dict)


def run_fuzz(
    *,
    examples: int,
    http_examples: int,
    root: Path,
    python: str = sys.executable,
    log_path: Path | None = None,
    timeout: float | None = None,
) -> FuzzResult:
    """Run tests/api under `python -m pytest` in `root`, every test to the end, and count.

    Args:
        examples: examples per in-process (validator) fuzz test.
        http_examples: examples per fuzz test that goes over HTTP.
        root: the repository, where pytest runs.
        python: the interpreter with pytest, hypothesis and schemathesis installed.
        log_path: where pytest's output goes; discarded when None.
        timeout: seconds before pytest is stopped and the run counts as failed (None: no limit).

    Raises:
        ValueError: an example count below 1.
    """
    for name, count in (("examples", examples), ("http_examples", http_examples)):
        if count < 1:
            raise ValueError(f"{name}: must be at least 1, got {count!r}")
    with tempfile.TemporaryDirectory(prefix="fleetscore-fuzz-") as scratch:
        report = Path(scratch) / "fuzz.json"
        env = {
            **os.environ,
            EXAMPLES_ENV: str(examples),
            HTTP_EXAMPLES_ENV: str(http_examples),
            REPORT_ENV: str(report),
        }
        started = time.monotonic()
        with open(log_path or os.devnull, "w", encoding="utf-8") as log:
            try:
                returncode = subprocess.run(
                    [python, *PYTEST_ARGS],
                    cwd=root,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    check=False,
                    timeout=timeout,
                ).returncode
            except subprocess.TimeoutExpired:
                log.write(f"\nstopped after the {timeout:g} s limit\n")
                returncode = TIMED_OUT
        seconds = time.monotonic() - started
        totals = json.loads(report.read_text(encoding="utf-8")) if report.exists() else None
    if totals is None:
        return FuzzResult(0, 0, True, returncode, seconds, {})
    return FuzzResult(
        cases=int(totals["cases"]),
        server_errors=int(totals["server_errors"]),
        failed=returncode != 0,
        returncode=returncode,
        seconds=seconds,
        by_test={str(k): int(v) for k, v in totals["by_test"].items()},
    )
