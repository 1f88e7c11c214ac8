"""The fuzz tally and report that `make chaos` reads: counted per body run, written on request."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from local.chaos import fuzz
from tests.api.conftest import (
    FUZZ_EXAMPLES_ENV,
    FUZZ_HTTP_EXAMPLES_ENV,
    FUZZ_REPORT_ENV,
    TALLY,
    FuzzTally,
    fuzz_examples,
    fuzz_settings,
    pytest_sessionfinish,
)


def response(status: int) -> requests.Response:
    answer = requests.Response()
    answer.status_code = status
    return answer


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, {"cheap": (200, True), "http": (60, True)}),
        ({FUZZ_EXAMPLES_ENV: "3000"}, {"cheap": (3000, False), "http": (150, False)}),
        ({FUZZ_EXAMPLES_ENV: "400"}, {"cheap": (400, False), "http": (60, False)}),
        ({FUZZ_HTTP_EXAMPLES_ENV: "90"}, {"cheap": (200, False), "http": (90, False)}),
        (
            {FUZZ_EXAMPLES_ENV: "3000", FUZZ_HTTP_EXAMPLES_ENV: "10"},
            {"cheap": (3000, False), "http": (10, False)},
        ),
        (
            {FUZZ_EXAMPLES_ENV: "", FUZZ_HTTP_EXAMPLES_ENV: " "},
            {"cheap": (200, True), "http": (60, True)},
        ),
    ],
    ids=["unset", "cheap-only", "cheap-only-small", "http-only", "both", "blank"],
)
def test_fuzz_examples_split_between_in_process_and_http(environ, expected):
    found = {
        "cheap": fuzz_examples(200, http=False, environ=environ),
        "http": fuzz_examples(60, http=True, environ=environ),
    }
    assert found == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("lots", f"{FUZZ_HTTP_EXAMPLES_ENV}: must be a whole number of examples, got 'lots'"),
        ("0", f"{FUZZ_HTTP_EXAMPLES_ENV}: must be at least 1, got '0'"),
    ],
)
def test_fuzz_examples_bad_value_names_the_variable(raw, message):
    with pytest.raises(ValueError, match=message):
        fuzz_examples(60, http=True, environ={FUZZ_HTTP_EXAMPLES_ENV: raw})


def test_fuzz_settings_counts_each_body_run_once(monkeypatch):
    monkeypatch.delenv(FUZZ_EXAMPLES_ENV, raising=False)
    monkeypatch.delenv(FUZZ_HTTP_EXAMPLES_ENV, raising=False)
    tally = FuzzTally(current="even")
    bodies = []

    @fuzz_settings(7, http=False, tally=tally)
    @given(n=st.integers().filter(lambda n: n % 2 == 0))
    def run(n: int) -> None:
        bodies.append(n)

    run()
    assert (len(bodies), tally.report()) == (
        7,
        {"cases": 7, "server_errors": 0, "by_test": {"even": 7}},
    )


def test_fuzz_settings_counts_shrinking_and_replay_of_a_failure(monkeypatch):
    monkeypatch.delenv(FUZZ_EXAMPLES_ENV, raising=False)
    monkeypatch.delenv(FUZZ_HTTP_EXAMPLES_ENV, raising=False)
    tally = FuzzTally(current="fails")
    bodies = []

    @fuzz_settings(50, http=True, tally=tally)
    @given(n=st.integers(0, 1000))
    def run(n: int) -> None:
        bodies.append(n)
        assert n < 10

    with pytest.raises(AssertionError):
        run()
    assert bodies[-1] == 10
    assert tally.by_test == {"fails": len(bodies)}


def test_fuzz_settings_below_given_is_refused():
    def bare(n: int) -> None: ...

    with pytest.raises(TypeError, match="fuzz_settings goes above @given"):
        fuzz_settings(1, http=False)(bare)


def test_fuzz_tally_counts_5xx_responses_and_passes_them_through():
    tally = FuzzTally()
    hooked = [tally.count_response(response(s)) for s in (200, 400, 404, 499, 500, 503, 599)]
    assert (hooked, tally.server_errors) == ([None] * 7, 3)


def test_fuzz_tally_writes_the_report_as_json(tmp_path):
    tally = FuzzTally()
    for test, cases in [("b::two", 2), ("a::three", 3)]:
        tally.current = test
        for _ in range(cases):
            tally.count_case()
    tally.count_response(response(502))
    tally.write_report(tmp_path / "fuzz.json")
    assert json.loads((tmp_path / "fuzz.json").read_text()) == {
        "cases": 5,
        "server_errors": 1,
        "by_test": {"a::three": 3, "b::two": 2},
    }


def test_fuzz_session_finish_writes_only_when_asked(request, monkeypatch, tmp_path):
    monkeypatch.delenv(FUZZ_REPORT_ENV, raising=False)
    pytest_sessionfinish(request.session, 0)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv(FUZZ_REPORT_ENV, str(tmp_path / "fuzz.json"))
    pytest_sessionfinish(request.session, 0)
    assert json.loads((tmp_path / "fuzz.json").read_text()) == TALLY.report()


def test_fuzz_http_session_tallies_its_responses(http):
    assert TALLY.count_response in http.hooks["response"]


# --- local/chaos/fuzz.py, with a stand-in for the interpreter (no nested pytest) --------------


def fake_python(tmp_path, script: str) -> str:
    path = tmp_path / "python"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return str(path)


def test_run_fuzz_environment_names_match_the_suite():
    assert (fuzz.EXAMPLES_ENV, fuzz.HTTP_EXAMPLES_ENV, fuzz.REPORT_ENV) == (
        FUZZ_EXAMPLES_ENV,
        FUZZ_HTTP_EXAMPLES_ENV,
        FUZZ_REPORT_ENV,
    )


def test_run_fuzz_reads_the_report_the_suite_wrote(tmp_path):
    report = {"cases": 5, "server_errors": 1, "by_test": {"t::a": 5}}
    python = fake_python(
        tmp_path,
        f"echo '{json.dumps(report)}' > \"$FLEETSCORE_FUZZ_REPORT\"\n"
        'echo "$PWD" "$FLEETSCORE_FUZZ_EXAMPLES" "$FLEETSCORE_FUZZ_HTTP_EXAMPLES" "$@"\n'
        "exit 1\n",
    )
    log = tmp_path / "fuzz.log"
    result = fuzz.run_fuzz(examples=30, http_examples=4, root=tmp_path, python=python, log_path=log)
    assert replace(result, seconds=0.0) == fuzz.FuzzResult(
        cases=5, server_errors=1, failed=True, returncode=1, seconds=0.0, by_test={"t::a": 5}
    )
    assert log.read_text() == f"{tmp_path} 30 4 -m pytest tests/api -q -p no:cacheprovider\n"


def test_run_fuzz_without_a_report_has_failed(tmp_path):
    result = fuzz.run_fuzz(
        examples=1, http_examples=1, root=tmp_path, python=fake_python(tmp_path, "exit 0\n")
    )
    assert replace(result, seconds=0.0) == fuzz.FuzzResult(0, 0, True, 0, 0.0, {})


def test_run_fuzz_refuses_zero_examples(tmp_path):
    with pytest.raises(ValueError, match="http_examples: must be at least 1, got 0"):
        fuzz.run_fuzz(examples=1, http_examples=0, root=tmp_path)
